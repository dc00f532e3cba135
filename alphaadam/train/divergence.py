"""When a training loss means the run has diverged."""

from __future__ import annotations

import math


def divergence(loss: float, max_loss: float) -> str | None:
    """Why ``loss`` ends the run (NaN, inf, or above ``max_loss``), or None when it does not."""
    if not math.isfinite(loss):
        return f"training loss is {loss}"
    if loss > max_loss:
        return f"training loss {loss:.4g} is above trainer.max_loss={max_loss:g}"
    return None
