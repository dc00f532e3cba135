"""Where the repository's folders are: the one place that locates ``configs/`` and ``recipes/``."""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_DIR / "configs"  # Hydra's config tree: configs/<recipe>.yaml and its groups
RECIPES_DIR = REPO_DIR / "recipes"  # recipes/<recipe>.py, the scripts that train
