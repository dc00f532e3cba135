"""alphaadam: the AlphaAdam optimizer, its baselines, and the recipes that reproduce its paper."""

__version__ = "0.1.0"
