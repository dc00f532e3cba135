"""The recipe contract (alphaadam/recipe.py), and how stop-errors become one line."""

import pytest
from omegaconf.errors import ConfigKeyError

from alphaadam.errors import ConfigError, UserError, error_line
from alphaadam.paths import RECIPES_DIR, hydra_search
from alphaadam.recipe import load_recipe
from alphaadam.train.config import RunSettings, compose, validate

RECIPES = sorted(p.stem for p in RECIPES_DIR.glob("*.py") if p.stem != "__init__")


def test_every_recipe_has_an_entry_config():
    assert RECIPES == ["finetune_glue", "finetune_gsm8k", "pretrain_gpt"]
    assert all((hydra_search(name)[0] / f"{name}.yaml").is_file() for name in RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_declares_the_contract(name):
    recipe = load_recipe(name)
    module = recipe.module
    assert (module.RECIPE, module.__name__) == (name, f"recipes.{name}")
    assert issubclass(recipe.schema, RunSettings) and callable(module.train)
    settings = validate(compose(name), recipe.schema)
    identity = module.identity(settings)
    assert identity["optimizer"] == "adamw" and identity["seed"] == 0 and identity["lr"] > 0
    assert recipe.preflight(settings, resources=False).startswith("config ok")


def test_groups_come_before_self_and_the_experiment_last():
    for name in RECIPES:
        text = (hydra_search(name)[0] / f"{name}.yaml").read_text()
        defaults = text.split("defaults:\n", 1)[1].split("\n\n", 1)[0].splitlines()
        entries = [line.strip()[2:] for line in defaults if line.strip().startswith("- ")]
        entries = [e for e in entries if not e.startswith("override ")]
        after_self = entries[entries.index("_self_") + 1 :]
        assert after_self[-1] == "experiment: null", name
        assert all(e.startswith("optional model_data:") for e in after_self[:-1]), name  # pair settings


def test_unknown_or_incomplete_recipes_stop_with_their_name(tmp_path):
    with pytest.raises(ConfigError, match=r"no recipe 'nope'.*\(recipes: .*pretrain_gpt"):
        load_recipe("nope")
    (tmp_path / "half.py").write_text("RECIPE = 'half'\n")
    with pytest.raises(ConfigError, match="half.py does not declare SCHEMA"):
        load_recipe("half", tmp_path).declared("SCHEMA")
    assert load_recipe("half", tmp_path).preflight(None) is None  # preflight() is optional


def test_error_lines():
    fix = UserError("no prepared token data in /d; prepare it with:\n  python scripts/prepare.py")
    assert error_line(fix, "pretrain_gpt") == (
        "pretrain_gpt: no prepared token data in /d; prepare it with: python scripts/prepare.py"
    )
    assert error_line(KeyError("x")) == "KeyError: 'x'"
    assert error_line(RuntimeError("CUDA out of memory.\nTried to allocate")) == (
        "RuntimeError: CUDA out of memory."
    )
    assert error_line(ValueError()) == "ValueError"
    key_error = ConfigKeyError("Key 'epochz' is not in struct")
    key_error.full_key = "trainer.epochz"
    assert error_line(key_error, "invalid config") == (
        "invalid config: trainer.epochz: Key 'epochz' is not in struct"
    )
