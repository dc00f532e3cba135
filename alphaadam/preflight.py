"""Checks that a run can start here, made before any long work (and before ``torchrun`` starts N
processes, or a sweep starts hundreds of jobs, that would all fail the same way).

    python -m alphaadam.preflight pretrain_gpt experiment=paper/gpt2_pretrain model=gpt2_355m
    python -m alphaadam.preflight finetune_glue experiment=paper/glue_roberta task=glue/rte
    python -m alphaadam.preflight --sweep experiment=paper/glue_roberta \
        [sweep.KEY=V] [OVERRIDE ...] [--dry-run]

The first two forms compose the recipe's config with the given overrides and check it against the
recipe's schema (keys and types, optimizer settings), then run the recipe's own ``preflight()``: the
device it asks for and what it reads (GPT-2 pretraining: its prepared token files; GLUE
fine-tuning: its model and tokenizer, local, cached or fetched from the hub, and its task's dataset,
loaded once so that it is in the cache for the jobs). ``--sweep`` takes
the arguments of ``alphaadam sweep``: it checks the config of one job per optimizer and task of the
study, and the device, model and data once per task; with ``--dry-run`` only the configs (no GPU,
model or data needed, so the plan of a GPU study can be printed anywhere). It prints one line per
check and exits 0 when everything can start, or prints what is missing (and how to fix it) and
exits 2.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from alphaadam.errors import ConfigError, UserError, error_line
from alphaadam.paths import CONFIG_DIR
from alphaadam.recipe import load_recipe
from alphaadam.sweep.cli import parse_tokens
from alphaadam.sweep.plan import job_overrides, skipped_optimizers
from alphaadam.sweep.spec import load_spec
from alphaadam.train.config import compose, validate


def preflight(cfg: DictConfig, recipe: str, resources: bool = True, checked: set | None = None) -> str:
    """Validate ``cfg`` (the config of ``recipe``) and, with ``resources``, what the recipe's own
    ``preflight()`` checks (its device and what it reads); returns a one-line summary or raises a
    stop-error. ``checked`` remembers what is already checked across calls (models, ...)."""
    found = load_recipe(recipe)
    typed = validate(cfg, found.schema)
    line = found.preflight(typed, resources, checked)
    return line if line is not None else f"config ok: {recipe} / {typed.optimizer.name}"


def preflight_sweep(tokens: list[str], resources: bool = True) -> list[str]:
    """The checks of a study: ``tokens`` as ``alphaadam sweep`` takes them (flags left out)."""
    parsed = parse_tokens(tokens)
    try:
        spec = load_spec(CONFIG_DIR, parsed["experiment"], parsed["spec_updates"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    skipped = skipped_optimizers(spec, CONFIG_DIR)
    lines = [f"skipped: {name} ({reason})" for name, reason in skipped.items()]
    seen_configs, seen_tasks, checked = set(), set(), set()
    for tags, overrides in job_overrides(spec):
        if tags["optimizer"] in skipped or (tags["optimizer"], tags["task"]) in seen_configs:
            continue
        seen_configs.add((tags["optimizer"], tags["task"]))
        cfg = compose(spec.recipe, [*overrides, *parsed["overrides"]])
        first_of_task = tags["task"] not in seen_tasks
        seen_tasks.add(tags["task"])
        line = preflight(cfg, spec.recipe, resources and first_of_task, checked)
        if first_of_task or not line.startswith("config ok"):
            lines.append(line)
    count = len(seen_configs)
    lines.append(f"{spec.name}: {count} configuration(s) of {len(seen_tasks)} task(s) checked")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    sweep = "--sweep" in argv
    dry_run = "--dry-run" in argv
    tokens = [a for a in argv if not a.startswith("--")]  # sweep flags (--only-failed, ...) are not ours
    name = "preflight" if sweep else tokens[0]
    try:
        if sweep:
            for line in preflight_sweep(tokens, resources=not dry_run):
                print(line, flush=True)
            if dry_run:
                print("--dry-run: configs checked; device, model and data not checked")
        else:
            print(preflight(compose(tokens[0], tokens[1:]), tokens[0], resources=not dry_run))
    except UserError as err:
        print(error_line(err, name), file=sys.stderr)
        return 2
    except Exception as err:  # Hydra's errors for unknown options and bad overrides: config errors
        if type(err).__module__.startswith(("hydra", "omegaconf")):
            print(error_line(ConfigError(str(err)), name), file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
