"""The recipes: one module per way of training, each a script that reads top to bottom.

``python recipes/<name>.py KEY=VALUE ...`` runs one; the engine finds one by name with
``alphaadam.recipe.load_recipe``, which says what a recipe module declares.
"""
