"""Learning-rate schedules as a function of the step, so that the step alone restores them.

``factor(step)`` multiplies each param group's base rate (``initial_lr``, kept in the group and hence
in the optimizer's state_dict) for the update that turns ``step`` completed steps into ``step + 1``.
Warm-up follows nanoGPT (``(step + 1) / (warmup + 1)``, never zero); after it the rate decays to
``min_lr_ratio`` of the peak at ``decay_steps`` (cosine or linear) and stays there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class LRSchedule:
    name: str
    warmup_steps: int
    decay_steps: int
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"schedule {self.name!r} is not one of {SCHEDULES}")

    @classmethod
    def from_config(cls, cfg, total_steps: int) -> LRSchedule:
        warmup = (
            cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_fraction * total_steps)
        )
        decay = cfg.decay_steps if cfg.decay_steps is not None else total_steps
        return cls(cfg.name, int(warmup), int(decay), float(cfg.min_lr_ratio))

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.name == "constant":
            return 1.0
        if step >= self.decay_steps:
            return self.min_lr_ratio
        progress = (step - self.warmup_steps) / max(1, self.decay_steps - self.warmup_steps)
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.name == "cosine" else 1.0 - progress
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's ``lr`` for this step; returns the first group's."""
        factor = self.factor(step)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
        return optimizer.param_groups[0]["lr"]
