"""Sweep specs: ``configs/sweep/<name>.yaml`` says which runs make up a study.

recipe: pretrain_gpt            # recipes/<recipe>.py, composed from configs/<recipe>.yaml
experiment: ablation_gpt2       # configs/experiment/<experiment>.yaml for every job (optional)
optimizers: [adamw, alphaadam]  # configs/optimizer/<name>.yaml
lr:                             # each optimizer's own grid; "default" for the others
  default: [3.0e-4, 6.0e-4]
  alphaadam: [6.0e-4, 1.0e-3]
tasks: [glue/rte, glue/mrpc]    # task=<name> for each (optional)
seeds: [0, 1, 2]
gpus_per_job: 1                 # 0 = CPU; >1 runs under torchrun
gpu_hours_per_job: 2.5          # estimate shown in the plan (optional); or per task:
                                #   {default: 0.05, glue/qqp: 0.5}
overrides: []                   # extra Hydra overrides for every job

An optimizer that the registry does not know (or that has no ``configs/optimizer/<name>.yaml``) is
named in the plan and its jobs are left out, so a spec can list a baseline before it is implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml


@dataclass(frozen=True)
class SweepSpec:
    name: str
    recipe: str
    optimizers: tuple[str, ...]
    lr: dict[str, tuple[float | None, ...]]
    seeds: tuple[int, ...] = (0,)
    experiment: str | None = None
    tasks: tuple[str, ...] | None = None
    gpus_per_job: int = 1
    gpu_hours_per_job: float | dict[str, float] | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def gpu_hours(self, task: str | None) -> float | None:
        """The estimate for one job of ``task``: the task's own, else ``default``, else None."""
        hours = self.gpu_hours_per_job
        if not isinstance(hours, dict):
            return hours
        return hours.get(task, hours.get("default")) if task is not None else hours.get("default")

    def grid(self, optimizer: str) -> tuple[float | None, ...]:
        """The learning rates to run; ``(None,)`` keeps the recipe's own."""
        try:
            return self.lr.get(optimizer) or self.lr["default"]
        except KeyError:
            raise ValueError(
                f"sweep {self.name!r}: no lr grid for {optimizer!r} and no 'default' grid"
            ) from None


def _fail(name: str, message: str):
    raise ValueError(f"sweep spec {name!r}: {message}")


def parse_spec(name: str, raw: dict) -> SweepSpec:
    known = {f.name for f in fields(SweepSpec)} - {"name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        _fail(name, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key in ("recipe", "optimizers"):
        if key not in raw:
            _fail(name, f"missing {key!r}")
    lr = raw.get("lr") or {"default": [None]}
    if isinstance(lr, list):
        lr = {"default": lr}
    if not isinstance(lr, dict) or not all(isinstance(v, list) and v for v in lr.values()):
        _fail(name, "'lr' must be a list of learning rates or a map optimizer -> list")
    hours = raw.get("gpu_hours_per_job")  # a number, or task -> number (tasks not swept are unused)
    try:
        if isinstance(hours, dict):
            hours = {str(k): float(v) for k, v in hours.items()}
        elif hours is not None:
            hours = float(hours)
        return SweepSpec(
            name=name,
            recipe=str(raw["recipe"]),
            optimizers=tuple(raw["optimizers"]),
            lr={k: tuple(None if x is None else float(x) for x in v) for k, v in lr.items()},
            seeds=tuple(int(s) for s in raw.get("seeds", [0])),
            experiment=raw.get("experiment"),
            tasks=tuple(raw["tasks"]) if raw.get("tasks") else None,
            gpus_per_job=int(raw.get("gpus_per_job", 1)),
            gpu_hours_per_job=hours,
            overrides=tuple(raw.get("overrides") or ()),
        )
    except (TypeError, ValueError) as err:
        _fail(name, str(err))


def load_spec(config_dir: Path, name: str, updates: dict | None = None) -> SweepSpec:
    """``configs/sweep/<name>.yaml``, with top-level keys replaced by ``updates`` (``sweep.<key>=``)."""
    path = Path(config_dir) / "sweep" / f"{name}.yaml"
    if not path.exists():
        available = sorted(
            str(p.relative_to(path.parent.parent / "sweep"))[:-5]
            for p in (Path(config_dir) / "sweep").rglob("*.yaml")
        )
        raise ValueError(f"no sweep spec {path}; available: {', '.join(available) or 'none'}")
    raw = yaml.safe_load(path.read_text()) or {}
    return parse_spec(name, {**raw, **(updates or {})})
