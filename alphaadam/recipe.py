"""The recipe contract, and :func:`load_recipe`, the one way the engine finds a recipe.

A recipe is a module ``recipes/<name>.py`` with an entry config ``configs/<name>.yaml``. It runs
as a script (``python recipes/<name>.py KEY=VALUE ...``, ending in
``alphaadam.train.session.run_main(train, RECIPE)``) and declares:

- ``RECIPE``: its name, ``<name>``;
- ``SCHEMA``: the structured-config dataclass its composed config is validated against
  (``alphaadam.train.config.validate``); a ``RANGES`` class variable of ``Range`` objects adds
  its own range checks;
- ``identity(settings) -> dict``: the fields of result.json's ``identity`` that tables select and
  label runs by (optimizer, lr, seed, model, task, ...; ``alphaadam.train.identity`` has the
  common ones);
- ``preflight(settings, resources, checked) -> str`` (optional): what ``python -m
  alphaadam.preflight`` checks beyond the config before long work (the device, the data and model
  files the run reads; ``checked`` remembers what is already checked), as a one-line summary;
- ``train(cfg) -> dict | None``: run, resume or skip the run, returning its result.json record.

The sweep planner only needs the script's path, so the module is imported when first used.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from alphaadam.errors import ConfigError
from alphaadam.paths import RECIPES_DIR


@dataclass(frozen=True)
class Recipe:
    name: str
    script: Path

    @functools.cached_property
    def module(self):
        """The recipe module, imported (as ``recipes.<name>`` from the repository's recipes/)."""
        if self.script.parent.resolve() == RECIPES_DIR.resolve():
            # recipes/ is a package of the repository, not installed: the `alphaadam` command finds
            # it from the repository root.
            if str(RECIPES_DIR.parent) not in sys.path:
                sys.path.append(str(RECIPES_DIR.parent))
            module = importlib.import_module(f"recipes.{self.name}")
        else:  # a recipe folder of one's own (--recipes-dir): loaded from its file
            key = f"alphaadam_recipe_{self.name}"
            spec = importlib.util.spec_from_file_location(key, self.script)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
        return module

    def declared(self, name: str):
        """What the module declares as ``name``; a recipe that lacks it stops, named."""
        if not hasattr(self.module, name):
            raise ConfigError(f"recipe {self.script} does not declare {name} (see alphaadam/recipe.py)")
        return getattr(self.module, name)

    @property
    def schema(self) -> type:
        return self.declared("SCHEMA")

    def preflight(self, settings, resources: bool = True, checked: set | None = None) -> str | None:
        """The recipe's own checks, or None when it declares none."""
        check = getattr(self.module, "preflight", None)
        return None if check is None else check(settings, resources, set() if checked is None else checked)

    def train(self, cfg):
        return self.declared("train")(cfg)


def load_recipe(name: str, recipes_dir: Path | str = RECIPES_DIR) -> Recipe:
    """The recipe called ``name`` (``recipes/<name>.py``); an unknown name stops with the known ones."""
    script = Path(recipes_dir) / f"{name}.py"
    if not script.is_file():
        known = ", ".join(p.stem for p in sorted(Path(recipes_dir).glob("*.py")) if p.stem != "__init__")
        raise ConfigError(f"no recipe {name!r}: {script} does not exist (recipes: {known or 'none'})")
    return Recipe(name, script)
