"""Loss and evaluation bookkeeping for metrics.jsonl and result.json, saved in checkpoints so that a
resumed run reports what an uninterrupted one would.

An evaluation is a dict of metrics (pretraining: ``val_loss``; GLUE: accuracy, F1, ...); ``best`` is
the evaluation with the best value of ``main`` (lower is better unless ``higher_is_better``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


def fraction_key(fraction: float) -> str:
    """Key of an evaluation point in ``metrics.at_fraction``: 0.2 -> "0.2", 1 -> "1.0"."""
    return str(float(fraction))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class LossTracker:
    window_sum: float = 0.0  # training losses since the last metrics record
    window_count: int = 0
    final: dict = field(default_factory=dict)  # the last evaluation, and the last training loss
    best: dict = field(default_factory=dict)
    best_step: int | None = None
    at_fraction: dict = field(default_factory=dict)
    main: str = "val_loss"  # the metric that decides which evaluation is the best
    higher_is_better: bool = False

    def add_train(self, loss: float) -> None:
        self.window_sum += loss
        self.window_count += 1

    def take_train(self) -> float | None:
        """Mean training loss since the last call (None when no step was taken)."""
        if not self.window_count:
            return None
        mean = self.window_sum / self.window_count
        self.window_sum, self.window_count = 0.0, 0
        self.final["train_loss"] = mean
        return mean

    def add_eval(self, step: int, values: dict, fraction: float | None = None) -> None:
        """Record an evaluation at ``step``: it becomes ``final`` and, if its ``main`` value is
        finite and better than the best so far, ``best``."""
        self.final.update(values, step=step)
        score, best = values.get(self.main), self.best.get(self.main)
        if _finite(score) and (best is None or (score > best if self.higher_is_better else score < best)):
            self.best, self.best_step = dict(values), step
        if fraction is not None:
            self.at_fraction[fraction_key(fraction)] = {**values, "step": step}

    def add_val(self, step: int, loss: float, fraction: float | None = None) -> None:
        self.add_eval(step, {"val_loss": loss}, fraction)

    def metrics(self) -> dict:
        """result.json's ``metrics``: final, best, best_step, at_fraction."""
        return {
            "final": dict(self.final),
            "best": dict(self.best),
            "best_step": self.best_step,
            "at_fraction": dict(self.at_fraction),
        }

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
