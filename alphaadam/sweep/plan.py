"""Expand a sweep spec into jobs and find each job's run directory without running it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hydra import compose, initialize_config_dir

from alphaadam.runs import run_dir_for
from alphaadam.sweep.job import Job
from alphaadam.sweep.spec import SweepSpec

# What `alphaadam status` and the plan show, in this order.
STATUS_ORDER = ("completed", "running", "interrupted", "failed", "diverged", "oom", "pending")


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


def plan(spec: SweepSpec, config_dir: Path, recipes_dir: Path, extra_overrides: list[str] = ()) -> list[Job]:
    """Every job of the sweep; each composed exactly as its recipe will compose it."""
    script = Path(recipes_dir) / f"{spec.recipe}.py"
    if not script.exists():
        raise ValueError(f"sweep {spec.name!r}: recipe script {script} does not exist")
    jobs = []
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        for tags, overrides in job_overrides(spec):
            overrides = [*overrides, *extra_overrides]
            run_dir = run_dir_for(compose(config_name=spec.recipe, overrides=overrides))
            jobs.append(
                Job(str(script), tuple(overrides), run_dir, spec.gpus_per_job, spec.gpu_hours_per_job, tags)
            )
    return jobs


def select(jobs: list[Job], only_failed: bool = False) -> list[Job]:
    """Jobs to launch: pending and interrupted ones (they resume), or only the failed ones.

    Completed, diverged and oom runs are outcomes and are never rerun by a sweep; running ones
    belong to another live process.
    """
    wanted = ("failed",) if only_failed else ("pending", "interrupted")
    return [job for job in jobs if job.status() in wanted]


def summary(jobs: list[Job]) -> str:
    counts = Counter(job.status() for job in jobs)
    parts = [f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s]]
    hours = [j.gpu_hours * max(j.gpus, 1) for j in jobs if j.gpu_hours is not None]
    estimate = f", ~{sum(hours):.0f} GPU-hours in all" if len(hours) == len(jobs) and jobs else ""
    return f"{len(jobs)} jobs ({', '.join(parts) or 'none'}){estimate}"
