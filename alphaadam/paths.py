"""Where the repository's folders are: the one place that locates ``configs/`` and ``recipes/``."""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_DIR / "configs"  # Hydra's config tree: configs/<recipe>.yaml and its groups
RECIPES_DIR = REPO_DIR / "recipes"  # recipes/<recipe>.py, the scripts that train


def hydra_search(recipe: str, config_dir: Path | str = CONFIG_DIR) -> tuple[Path, list[str]]:
    """``(directory, overrides)`` to hand Hydra for ``recipe``'s config.

    A recipe with a directory of its own, ``configs/<recipe>/``, keeps its primary config there with
    the group options only it reads (the GSM8K recipe's ``data`` options): Hydra searches its main
    directory first and appends ``hydra.searchpath``, so that directory is made the main one and
    ``configs/`` appended; ``data=embedded`` is then the GSM8K rows in that recipe and GPT's tokens in
    the GPT recipe. Other recipes compose from ``configs/`` alone.
    """
    config_dir = Path(config_dir).resolve()
    own = config_dir / recipe
    if not (own / f"{recipe}.yaml").is_file():
        return config_dir, []
    return own, [f"hydra.searchpath=['file://{config_dir}']"]
