"""Expand a sweep spec into jobs and find each job's run directory without running it."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from alphaadam.errors import ConfigError
from alphaadam.paths import hydra_search
from alphaadam.recipe import load_recipe
from alphaadam.runs import run_dir_for
from alphaadam.sweep.job import Job
from alphaadam.sweep.spec import SweepSpec
from alphaadam.train.config import OPTIMIZER_RANGES, RANGES, check_ranges, validate

# What `alphaadam status` and the plan show, in this order (any other status is counted after them).
STATUS_ORDER = ("completed", "running", "interrupted", "failed", "diverged", "oom", "unreadable", "pending")


def status_counts(statuses: list[str]) -> str:
    """``"3 completed, 1 failed"``: every status counted, known ones in STATUS_ORDER, others after."""
    counts = Counter(statuses)
    order = [*STATUS_ORDER, *sorted(set(counts) - set(STATUS_ORDER))]
    return ", ".join(f"{counts[s]} {s}" for s in order if counts[s])


def own_value_overrides(tags: dict) -> list[str]:
    """The learning-rate and seed overrides :func:`job_overrides` gives a job (as it spells them)."""
    own = [f"seed={tags['seed']}"]
    if tags["lr"] is not None:
        own.insert(0, f"optimizer.lr={tags['lr']!r}")
    return own


class JobComposer:
    """Composes job configs as Hydra does, faster for large grids: jobs that differ only in their
    learning rate and seed share one composition of everything else, onto which their two value
    overrides are applied as Hydra applies command-line values (``OmegaConf.update`` of the parsed
    value, after the defaults are merged), which gives the same config. A job whose other overrides
    also set ``optimizer.lr`` or ``seed`` is composed on its own. Call inside ``initialize_config_dir``;
    ``search`` are the overrides :func:`~alphaadam.paths.hydra_search` gives, added to every job's.
    """

    def __init__(self, config_name: str, search: list[str] = ()):
        self.config_name, self.search = config_name, list(search)
        self.parser = OverridesParser.create()
        self.shared: dict[tuple[str, ...], object] = {}

    def __call__(self, overrides: list[str], own: list[str]):
        rest = [o for o in overrides if o not in own]
        own_keys = {o.split("=", 1)[0] for o in own}
        if any(o.key_or_group.lstrip("+~") in own_keys for o in self.parser.parse_overrides(rest)):
            return compose(config_name=self.config_name, overrides=[*overrides, *self.search])
        key = tuple(rest)
        if key not in self.shared:
            self.shared[key] = compose(config_name=self.config_name, overrides=[*rest, *self.search])
        cfg = copy.deepcopy(self.shared[key])
        for override in self.parser.parse_overrides(own):
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        return cfg


def job_overrides(spec: SweepSpec) -> list[tuple[dict, list[str]]]:
    """(tags, overrides) per job: optimizers x tasks x each optimizer's LR grid x seeds."""
    expanded = []
    for optimizer in spec.optimizers:
        for task in spec.tasks or (None,):
            for lr in spec.grid(optimizer):
                for seed in spec.seeds:
                    tags = {"optimizer": optimizer, "lr": lr, "seed": seed, "task": task}
                    overrides = [f"optimizer={optimizer}", f"seed={seed}"]
                    if lr is not None:
                        overrides.insert(1, f"optimizer.lr={lr!r}")
                    if task is not None:
                        overrides.append(f"task={task}")
                    if spec.experiment:
                        overrides.insert(0, f"experiment={spec.experiment}")
                    expanded.append((tags, [*overrides, *spec.overrides]))
    return expanded


def skipped_optimizers(spec: SweepSpec, config_dir: Path) -> dict[str, str]:
    """Optimizers of the spec that cannot run here, with the reason: not in the optimizer registry,
    or no ``configs/optimizer/<name>.yaml``. Their jobs are left out of the plan."""
    from alphaadam.optim import available_optimizers

    registered = set(available_optimizers())
    skipped = {}
    for name in spec.optimizers:
        if name not in registered:
            skipped[name] = "not in the optimizer registry"
        elif not (Path(config_dir) / "optimizer" / f"{name}.yaml").is_file():
            skipped[name] = f"no configs/optimizer/{name}.yaml"
    return skipped


def plan(
    spec: SweepSpec,
    config_dir: Path,
    recipes_dir: Path,
    extra_overrides: list[str] = (),
    validate_jobs: bool = True,
) -> list[Job]:
    """Every job of the sweep; each composed exactly as its recipe will compose it and, with
    ``validate_jobs``, validated against the recipe's schema. Jobs of the optimizers that
    :func:`skipped_optimizers` names are left out."""
    try:
        recipe = load_recipe(spec.recipe, recipes_dir)
        schema = recipe.schema if validate_jobs else None
    except ConfigError as err:
        raise ValueError(f"sweep {spec.name!r}: {err}") from None
    skipped = skipped_optimizers(spec, config_dir)
    jobs, validated = [], set()
    main, search = hydra_search(spec.recipe, config_dir)
    with initialize_config_dir(config_dir=str(main), version_base=None):
        compose_job = JobComposer(spec.recipe, search)
        for tags, overrides in job_overrides(spec):
            if tags["optimizer"] in skipped:
                continue
            overrides = [*overrides, *extra_overrides]
            own = own_value_overrides(tags)
            cfg = compose_job(overrides, own)
            if schema is not None:  # every job checked before any starts: no failure an hour in
                try:
                    check_job(cfg, schema, tuple(o for o in overrides if o not in own), validated)
                except ConfigError as err:
                    raise ValueError(f"job {' '.join(overrides)}: {err}") from None
            run_dir = run_dir_for(cfg)
            hours = spec.gpu_hours(tags["task"])
            jobs.append(Job(str(recipe.script), tuple(overrides), run_dir, spec.gpus_per_job, hours, tags))
    return jobs


def check_job(cfg, schema: type, shared: tuple, validated: set) -> None:
    """Validate a job's config. Jobs that differ only in learning rate and seed share everything
    else (see JobComposer), so the first is validated whole and the others' two values alone."""
    if shared in validated:
        check_ranges({"seed": cfg.seed}, RANGES)
        check_ranges({"lr": cfg.optimizer.get("lr")}, OPTIMIZER_RANGES, prefix="optimizer.")
        return
    validate(cfg, schema)
    validated.add(shared)


def select(jobs: list[Job], only_failed: bool = False) -> list[Job]:
    """Jobs to launch: pending and interrupted ones (they resume), or only the failed ones.

    Completed, diverged and oom runs are outcomes and are never rerun by a sweep; running ones
    belong to another live process.
    """
    wanted = ("failed",) if only_failed else ("pending", "interrupted")
    return [job for job in jobs if job.status() in wanted]


def summary(jobs: list[Job]) -> str:
    hours = [j.gpu_hours * max(j.gpus, 1) for j in jobs if j.gpu_hours is not None]
    estimate = f", ~{sum(hours):.0f} GPU-hours in all" if len(hours) == len(jobs) and jobs else ""
    return f"{len(jobs)} jobs ({status_counts([job.status() for job in jobs]) or 'none'}){estimate}"
