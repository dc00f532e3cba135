"""The pretraining configs: every group option composes and validates, errors name the key."""

import os
import re
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

import recipes.pretrain_gpt as recipe
from alphaadam.errors import ConfigError
from alphaadam.models.gpt import GPT, GPTConfig
from alphaadam.optim import available_optimizers
from alphaadam.paths import CONFIG_DIR
from alphaadam.recipe import load_recipe
from alphaadam.train.config import build_optimizer_from_config, compose, validate
from alphaadam.train.schedule import LRSchedule
from tests.pretrain_helpers import REPO


def options(group: str) -> list[str]:
    return sorted(
        p.relative_to(CONFIG_DIR / group).with_suffix("").as_posix()
        for p in (CONFIG_DIR / group).rglob("*.yaml")
    )


def leaf_keys(node, prefix="") -> set[str]:
    keys = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        keys |= leaf_keys(value, f"{path}.") if isinstance(value, dict) else {path}
    return keys


# Group options that belong to GLUE fine-tuning; scheduler and logger options serve both recipes.
GLUE_ONLY = {"model=roberta_base", "trainer=glue", "experiment=paper/glue_roberta"}
GLUE_ONLY |= {f"task={name}" for name in options("task")}


GSM8K_ONLY = {"model=llama2_7b", "model=tiny_llama", "trainer=gsm8k"}
GSM8K_ONLY |= {"experiment=gsm8k_tiny", "experiment=paper/gsm8k_llama2"}


def recipes_of(override: str) -> list[str]:
    if override in GLUE_ONLY:
        return ["finetune_glue"]
    if override in GSM8K_ONLY:
        return ["finetune_gsm8k"]
    if override.split("=")[0] in ("scheduler", "logger"):
        return ["pretrain_gpt", "finetune_glue", "finetune_gsm8k"]
    return ["pretrain_gpt"]


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={name}"
        for group in ("model", "data", "task", "scheduler", "trainer", "logger")
        for name in options(group)
    ]
    + [f"experiment={name}" for name in options("experiment")],
)
def test_every_group_option_composes_validates_and_spells_out_every_key(override):
    for recipe_name in recipes_of(override):
        cfg = compose(recipe_name, [override])
        typed = validate(cfg, load_recipe(recipe_name).schema)
        # The YAML names every key of the schema: the run directory's hash, computed from the composed
        # config by anyone who composes it (sweeps), covers every setting.
        composed = OmegaConf.to_container(cfg, resolve=True)
        assert leaf_keys(composed) == leaf_keys(OmegaConf.to_container(typed))


def test_optimizer_files_name_registry_entries_and_build():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    names = options("optimizer")
    assert {"adamw", "sgd", "alphaadam", "cadamw", "alphasgd", "adamw_sm", "adamw_am"} <= set(names)
    for name in names:
        cfg = compose("pretrain_gpt", [f"optimizer={name}"])
        assert cfg.optimizer.name == name and name in available_optimizers()
        optimizer = build_optimizer_from_config(model, validate(cfg, recipe.SCHEMA).optimizer)
        assert optimizer.param_groups[0]["lr"] == cfg.model.lr
        if "betas" in cfg.optimizer:
            assert tuple(optimizer.param_groups[0]["betas"]) == (0.9, 0.95)  # the recipe's adam_betas
        assert {g["weight_decay"] for g in optimizer.param_groups} == {0.1, 0.0}  # >= 2-D tensors only


def test_paper_experiments_use_table5_and_the_command_line_wins():
    cfg = compose(
        "pretrain_gpt", ["experiment=paper/gpt2_pretrain", "model=gpt2_355m", "optimizer=alphaadam"]
    )
    assert (cfg.model.name, cfg.optimizer.lr, cfg.trainer.micro_batch_size) == ("gpt2_355m", 3e-4, 6)
    assert (cfg.data.name, cfg.trainer.device, cfg.trainer.max_steps) == ("openwebtext", "cuda", 2000)
    assert cfg.run.label == "gpt2_355m-alphaadam-lr0.0003-s0" and cfg.experiment == "paper/gpt2_pretrain"
    table3 = compose("pretrain_gpt", ["experiment=paper/ablation_gpt2"])
    assert (table3.model.name, table3.trainer.max_steps) == ("gpt2_125m", 10000)
    assert list(table3.trainer.eval_at_fractions) == [0.2, 0.4, 0.6, 1.0]
    settings = validate(table3, recipe.SCHEMA)
    assert recipe.accumulation_steps(settings, world_size=8) == 5  # 491520 tokens per step


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+trainer.max_stepz=3"], "trainer.max_stepz"),
        (["trainer.max_steps=abc"], "trainer.max_steps"),
        (["+model.n_layers=3"], "model.n_layers"),
        (["trainer.eval_at_fractions=[0.2,x]"], "trainer.eval_at_fractions"),
        (["trainer.dtype=fp8"], "trainer.dtype='fp8' is not one of"),
        (["trainer.log_every=0"], "trainer.log_every=0 must be at least 1"),
        (["+optimizer.momentum=0.9"], "optimizer.momentum"),
        (["optimizer.name=adamx"], "unknown optimizer 'adamx'"),
        (["model.n_layer=???"], "model.n_layer"),
        (["scheduler.min_lr_ratio=-1"], "scheduler.min_lr_ratio=-1.0 must be in [0, 1]"),
        (["scheduler.warmup_fraction=1.5"], "scheduler.warmup_fraction=1.5 must be in [0, 1)"),
        (["trainer.eval_at_fractions=[0.5,1.2]"], "trainer.eval_at_fractions=[0.5, 1.2] must be in (0, 1]"),
        (["trainer.max_loss=0"], "trainer.max_loss=0.0 must be greater than 0"),
        (["model.dropout=1.0"], "model.dropout=1.0 must be in [0, 1)"),
        (["adam_betas=[0.9,1.0]"], "adam_betas=[0.9, 1.0] must be in [0, 1)"),
        (["optimizer.lr=-0.001"], "optimizer.lr=-0.001 must be greater than 0"),
        (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1 must be at least 0"),
        (["optimizer.eps=0"], "optimizer.eps=0 must be greater than 0"),
        (["optimizer=galore", "optimizer.rank=0"], "optimizer.rank=0 must be at least 1"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose("pretrain_gpt", overrides), recipe.SCHEMA)


def test_bad_optimizer_values_and_shapes_are_reported_at_start_up(tmp_path):
    cfg = compose("pretrain_gpt", [f"run.root={tmp_path}", "optimizer.betas=[0.9]"])
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    with pytest.raises(ConfigError, match="optimizer 'adamw' rejected its settings.*betas=\\[0.9\\]"):
        build_optimizer_from_config(model, validate(cfg, recipe.SCHEMA).optimizer)
    bad_accumulation = validate(compose("pretrain_gpt", ["trainer.tokens_per_step=1000"]), recipe.SCHEMA)
    with pytest.raises(ConfigError, match="trainer.tokens_per_step=1000 is not a multiple"):
        recipe.accumulation_steps(bad_accumulation, world_size=1)


def test_command_line_errors_print_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args, message in (
        (["trainer.max_steps=abc"], "trainer.max_steps"),
        (["+optimizer.foo=1"], "optimizer.foo"),
    ):
        run = subprocess.run(
            [sys.executable, "recipes/pretrain_gpt.py", f"run.root={tmp_path}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert not any(tmp_path.iterdir())


def test_cosine_schedule_is_nanogpts():
    s = LRSchedule("cosine", warmup_steps=10, decay_steps=100, min_lr_ratio=0.1)
    assert s.factor(0) == pytest.approx(1 / 11) and s.factor(9) == pytest.approx(10 / 11)
    assert s.factor(10) == 1.0 and s.factor(55) == pytest.approx(0.55)
    assert s.factor(100) == s.factor(500) == 0.1
    assert [s.factor(i) for i in range(11, 100)] == sorted(
        [s.factor(i) for i in range(11, 100)], reverse=True
    )
    linear = LRSchedule("linear", warmup_steps=0, decay_steps=10, min_lr_ratio=0.0)
    assert [round(linear.factor(i), 6) for i in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert LRSchedule("constant", 2, 10).factor(7) == 1.0


def test_schedule_sets_each_groups_rate_from_its_base():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.SGD([{"params": params[:1], "lr": 1.0}, {"params": params[1:], "lr": 0.5}])
    schedule = LRSchedule.from_config(compose("pretrain_gpt").scheduler, total_steps=100)
    assert schedule.warmup_steps == 5  # warmup_fraction 0.05
    schedule.apply(optimizer, 2)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.25])
    schedule.apply(optimizer, 5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1.0, 0.5])


def test_make_targets_check_first_then_sweep_then_report(tmp_path):
    stamp = tmp_path / "stamp"
    stamp.touch()
    run = subprocess.run(
        ["make", "-n", "reproduce-gpt2", "SIZE=355m", f"STAMP={stamp}", "SWEEP=--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    lines = [line for line in run.stdout.splitlines() if not line.startswith("make[")]  # nested make
    assert lines[0].endswith(
        "-m alphaadam.preflight pretrain_gpt experiment=paper/gpt2_pretrain model=gpt2_355m"
    )
    assert lines[1].endswith("alphaadam sweep experiment=paper/gpt2_pretrain model=gpt2_355m --dry-run")
    assert "tables figures" in lines[2]
    run = subprocess.run(
        ["make", "-n", "reproduce-ablation", f"STAMP={stamp}"], cwd=REPO, capture_output=True, text=True
    )
    assert "alphaadam sweep experiment=paper/ablation_gpt2" in run.stdout


def test_preflight_stops_without_a_gpu_or_data():
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def preflight(*overrides):
        cmd = [sys.executable, "-m", "alphaadam.preflight", "pretrain_gpt", *overrides]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)

    if not torch.cuda.is_available():
        run = preflight("experiment=paper/gpt2_pretrain", "model=gpt2_770m")
        assert run.returncode == 2 and "asks for a GPU" in run.stderr and "Traceback" not in run.stderr
    run = preflight("experiment=paper/ablation_gpt2", "trainer.device=cpu", "data.dir=/nonexistent/owt")
    assert run.returncode == 2 and "scripts/prepare_openwebtext.py --out /nonexistent/owt" in run.stderr
    run = preflight("model=gpt2_999m")
    assert run.returncode == 2 and "gpt2_355m" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "recipe_name, overrides, fitting",
    [
        ("pretrain_gpt", ["model=roberta_base"], "gpt2_125m, gpt2_355m, gpt2_770m, tiny"),
        ("finetune_glue", ["model=tiny"], "roberta_base"),
    ],
)
def test_a_group_option_of_another_recipe_is_named(recipe_name, overrides, fitting):
    with pytest.raises(ConfigError, match=rf"model chosen is for another recipe; choose one of: {fitting}$"):
        validate(compose(recipe_name, overrides), load_recipe(recipe_name).schema)
