"""Helpers shared by the recipe tests: a run's metrics without timings, and a simulated Ctrl-C."""

from __future__ import annotations

from alphaadam.runs.metrics import MetricsLog
from alphaadam.runs.rundir import run_dir_for

# Measured quantities that differ between two runs of the same config (time, speed, memory).
TIMING_KEYS = ("time_s", "tokens_per_s", "peak_bytes")


def records(cfg) -> list[dict]:
    """metrics.jsonl of the run, without its timing fields."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in MetricsLog(run_dir_for(cfg)).read()]


def interrupt_at(recipe, step: int):
    """A stand-in for ``recipe``'s divergence check that raises KeyboardInterrupt at ``step``;
    ``.real`` is the check it replaces."""
    real = recipe.divergence
    calls = {"n": 0}

    def check(loss, bound):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real(loss, bound)

    check.real = real
    return check
