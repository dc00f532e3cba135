"""The statistics behind a table: intervals over seeds, paired tests against a baseline row, and
the speed at which each optimizer reaches the baseline's final loss.

Every number here comes from scipy (Student t quantiles, the paired t-test, the exact sign-flip
permutation test); this module only decides what is paired with what.

- **Interval** of a cell's mean over its seeds: ``ci95`` (half-width of the 95 % Student t interval,
  n >= 2), ``std`` (the sample standard deviation) or ``none``.
- **Paired comparison** of a row with the baseline row in one column: the values of the selected
  configurations are paired by seed (same seed: same data order and initialisation), the difference
  is row − baseline, and the test is the paired t-test or the exact sign-flip permutation test
  (every one of the 2^n sign patterns of the differences, so no randomness). ``auto`` takes the
  sign-flip test below ``SMALL_N`` pairs, where the t-test's normality assumption cannot be checked.
- **Speed to target**: the first point (linearly interpolated between logged evaluations) at which
  the mean over seeds of a row's validation curve reaches the target (the baseline's final value,
  the mean over its seeds), in steps, tokens and seconds; "not reached" when it never gets there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

INTERVALS = ("ci95", "std", "none")
TESTS = ("auto", "t", "sign_flip")
SMALL_N = 6  # below this many pairs, `auto` uses the exact sign-flip test
SPEED_AXES = ("step", "tokens", "time_s")


def interval(values: list[float], kind: str) -> float | None:
    """Half-width (ci95) or standard deviation (std) of the values' mean; None when undefined
    (one value) or not asked for."""
    values = np.asarray(values, dtype=float)
    if kind == "none" or len(values) < 2:
        return None
    if kind == "std":
        return float(values.std(ddof=1))
    sem = stats.sem(values)
    if sem == 0:  # identical values: scipy's interval is undefined at scale 0
        return 0.0
    low, high = stats.t.interval(0.95, df=len(values) - 1, loc=values.mean(), scale=sem)
    return float((high - low) / 2)


@dataclass(frozen=True)
class Comparison:
    """Row − baseline over the seeds both have: mean difference, pairs, p-value and the test used."""

    diff: float
    n: int
    p: float | None  # None with fewer than two pairs
    test: str

    def significant(self, alpha: float) -> bool:
        return self.p is not None and self.p < alpha


def paired(row: dict, baseline: dict, test: str = "auto") -> Comparison | None:
    """Compare ``row`` and ``baseline`` ({seed: value}) on their common seeds; None without one."""
    seeds = sorted(set(row) & set(baseline), key=str)
    if not seeds:
        return None
    x = np.array([row[s] for s in seeds], dtype=float)
    y = np.array([baseline[s] for s in seeds], dtype=float)
    d = x - y
    chosen = ("sign_flip" if len(seeds) < SMALL_N else "t") if test == "auto" else test
    if len(seeds) < 2:
        return Comparison(float(d.mean()), 1, None, chosen)
    if np.allclose(d, d[0]) and chosen == "t":  # no spread: the t statistic is undefined
        p = 1.0 if d[0] == 0 else 0.0
    elif chosen == "t":
        p = float(stats.ttest_rel(x, y).pvalue)
    else:
        result = stats.permutation_test(
            (x, y),
            lambda a, b: np.mean(a - b),
            permutation_type="samples",
            n_resamples=np.inf,  # every sign pattern: exact
            alternative="two-sided",
        )
        p = float(result.pvalue)
    return Comparison(float(d.mean()), len(seeds), p, chosen)


def smallest_sign_flip_p(n: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test can give with ``n`` pairs."""
    return min(1.0, 2.0 / 2**n)


def crossing(points: list[dict], target: float, metric: str = "val_loss") -> dict | None:
    """Where a run's ``metric`` first reaches ``target`` (<=), interpolated linearly in step, tokens
    and time between the two logged evaluations around it; None when it never does."""
    curve = [p for p in points if _finite(p.get(metric)) and _finite(p.get("step"))]
    previous = None
    for point in curve:
        value = float(point[metric])
        if value <= target:
            if previous is None or float(previous[metric]) == value:
                return {axis: _number(point.get(axis)) for axis in SPEED_AXES}
            f = (float(previous[metric]) - target) / (float(previous[metric]) - value)
            return {
                axis: _lerp(_number(previous.get(axis)), _number(point.get(axis)), f) for axis in SPEED_AXES
            }
        previous = point
    return None


def speed_to_target(curves: list[list[dict]], target: float, metric: str = "val_loss") -> dict | None:
    """:func:`crossing` of the seeds' mean curve (at the steps every seed logged): None when it
    never reaches ``target``. The baseline's mean curve reaches its own final mean at its last step."""
    by_step = [
        {int(p["step"]): p for p in points if _finite(p.get(metric)) and _finite(p.get("step"))}
        for points in curves
    ]
    common = sorted(set.intersection(*(set(d) for d in by_step))) if by_step else []
    mean_curve = [
        {
            "step": step,
            metric: float(np.mean([float(d[step][metric]) for d in by_step])),
            **{
                axis: float(np.mean([_number(d[step].get(axis)) for d in by_step])) for axis in SPEED_AXES[1:]
            },
        }
        for step in common
    ]
    return crossing(mean_curve, target, metric)


def final_value(curves: list[list[dict]], metric: str = "val_loss") -> float | None:
    """Mean over runs of each run's last finite ``metric``: the baseline's final loss, the target."""
    last = []
    for points in curves:
        values = [float(p[metric]) for p in points if _finite(p.get(metric))]
        if values:
            last.append(values[-1])
    return float(np.mean(last)) if last else None


def _finite(value) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _number(value) -> float:
    return float(value) if _finite(value) else math.nan


def _lerp(a: float, b: float, f: float) -> float:
    return a + (b - a) * f
