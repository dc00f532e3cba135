"""Reports from run results: one index of all runs, paper-style tables and figures.

Modules, one job each (import them directly; this package imports nothing heavy):

- ``collect``   scan run roots for result.json into a pandas DataFrame; write results/index/
- ``spec``      load and validate a report spec (configs/report/<name>.yaml)
- ``reference`` published numbers (results/reference/paper_numbers.yaml)
- ``select``    per row x column: pick the configuration (learning rate), aggregate over seeds
- ``tables``    Markdown and LaTeX tables in the paper's layout
- ``figures``   loss curves, LR sensitivity, alpha statistics, memory and step time
- ``build``     the entry points behind ``alphaadam collect | tables | figures``
"""
