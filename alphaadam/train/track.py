"""Loss bookkeeping for metrics.jsonl and result.json, saved in checkpoints so that a resumed run
reports what an uninterrupted one would."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


def fraction_key(fraction: float) -> str:
    """Key of an evaluation point in ``metrics.at_fraction``: 0.2 -> "0.2", 1 -> "1.0"."""
    return str(float(fraction))


@dataclass
class LossTracker:
    window_sum: float = 0.0  # training losses since the last metrics record
    window_count: int = 0
    final: dict = field(default_factory=dict)  # the last evaluation, and the last training loss
    best: dict = field(default_factory=dict)
    best_step: int | None = None
    at_fraction: dict = field(default_factory=dict)

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

    def add_val(self, step: int, loss: float, fraction: float | None = None) -> None:
        self.final.update(val_loss=loss, step=step)
        if math.isfinite(loss) and ("val_loss" not in self.best or loss < self.best["val_loss"]):
            self.best, self.best_step = {"val_loss": loss}, step
        if fraction is not None:
            self.at_fraction[fraction_key(fraction)] = {"val_loss": loss, "step": step}

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
