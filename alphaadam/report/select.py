"""Which runs fill a table cell: filter, group into configurations, pick one, aggregate over seeds.

A *configuration* is a run's identity without its seed field; runs of one configuration are the
seeds that are averaged. Since result.json's identity holds ``variant`` (a hash of the whole config
but the seed and the learning rate, see :func:`alphaadam.runs.rundir.variant_hash`), runs that
differ in any setting are different configurations; a cell whose runs come in several variants says
so (``Cell.variants``). Results written before ``variant`` existed are grouped by their other fields,
as they were. Rule ``best_mean_over_seeds`` (the only one so far): among the
configurations of a row x column that have at least one completed run with a finite value of the
selection metric, take the one with the best mean of it over those runs; ties go to the one with more
seeds, then to the smaller value of the swept field (``selection.over``, the learning rate).
Runs that are ``running`` or ``failed`` are not results and are ignored; ``diverged`` and ``oom``
runs are counted, so that a cell whose runs all diverged (or ran out of memory) says so.

A *held-out* cell (``baseline.split``) picks its configuration by the same rule on one set of seeds
and takes its values from the runs of that configuration on another set, so that a test on those
values is not biased by the choice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from alphaadam.report.spec import Column, Filter, Row, Spec

OUTCOMES = ("completed", "diverged", "oom")
MIN_SPLIT_SEEDS = 4  # two seeds to choose on and two to test on; fewer leaves no pair to test


@dataclass
class Cell:
    """``status``: "ok" (mean is set), "div", "oom", "div/oom" (no completed run) or "none"."""

    status: str
    mean: float | None = None
    std: float | None = None
    n: int = 0
    lost: dict[str, int] = field(default_factory=dict)  # selected configuration's diverged/oom seeds
    config: dict = field(default_factory=dict)  # identity of the selected configuration, minus seed
    over: object = None  # its value of selection.over (the learning rate)
    select_mean: float | None = None
    runs: list[str] = field(default_factory=list)  # run_dir of its completed seeds
    variants: int = 0  # distinct identity.variant values among the cell's runs (0: none recorded)
    per_seed: dict = field(default_factory=dict)  # seed -> value of the selected configuration

    @property
    def variant_note(self) -> str:
        """``", best of 2 variants"`` when the cell's runs differ in more than the swept field."""
        return f", best of {self.variants} variants" if self.variants > 1 else ""


def plain(value):
    """numpy scalars -> Python; NaN -> None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _as_float(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def same_value(a, b) -> bool:
    """Equality across YAML/JSON spellings: 3e-5 == "3e-5" == 3.0e-05, "8" == 8, True == True."""
    a, b = plain(a), plain(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    fa, fb = _as_float(a), _as_float(b)
    if fa is not None and fb is not None:
        return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=0.0)
    return str(a) == str(b)


def _mask(df: pd.DataFrame, column: str, accepted: tuple) -> pd.Series:
    if column not in df.columns:
        return pd.Series(False, index=df.index)
    return df[column].map(lambda v: any(same_value(v, want) for want in accepted)).astype(bool)


def apply_filter(df: pd.DataFrame, where: Filter, prefix: str = "identity.") -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    for name, accepted in where.items():
        keep &= _mask(df, f"{prefix}{name}", accepted)
    return df[keep]


def spec_runs(df: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """The runs a spec is about (recipe, experiment, identity filters)."""
    keep = pd.Series(True, index=df.index)
    if spec.runs.recipe:
        keep &= _mask(df, "recipe", spec.runs.recipe)
    if spec.runs.experiment:
        keep &= _mask(df, "experiment", spec.runs.experiment)
    return apply_filter(df[keep], spec.runs.identity)


def resolve_rows(df: pd.DataFrame, spec: Spec) -> list[Row]:
    """The spec's rows, or one per value of ``rows.key`` in its runs (sorted) when it lists none."""
    if spec.rows is not None:
        return list(spec.rows)
    column = f"identity.{spec.row_key}"
    runs = spec_runs(df, spec)
    if column not in runs.columns:
        return []
    values = sorted({plain(v) for v in runs[column] if plain(v) is not None}, key=str)
    return [Row(label=str(v), where={spec.row_key: (v,)}) for v in values]


def numeric(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[column], errors="coerce").astype(float)


def config_keys(df: pd.DataFrame, seed_field: str) -> pd.Series:
    """A JSON text per run: its identity fields except the seed (missing fields left out)."""
    fields = [c for c in df.columns if c.startswith("identity.") and c != f"identity.{seed_field}"]

    def key(row) -> str:
        ident = {c[len("identity.") :]: plain(row[c]) for c in fields}
        return json.dumps({k: v for k, v in ident.items() if v is not None}, sort_keys=True, default=str)

    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    return df.apply(key, axis=1)


def configurations(runs: pd.DataFrame, spec: Spec, metric: str) -> pd.DataFrame:
    """Per configuration of ``runs``: mean/std/n of ``metric`` over its completed seeds, lost seeds.

    Columns: config (JSON text), over, mean, std, n, n_div, n_oom, n_completed, runs (run_dir list).
    """
    runs = runs[runs["status"].isin(OUTCOMES)] if len(runs) else runs
    cols = ["config", "over", "mean", "std", "n", "n_div", "n_oom", "n_completed", "runs"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    values = numeric(runs, metric)
    keys = config_keys(runs, spec.selection.seed)
    over_col = f"identity.{spec.selection.over}"
    records = []
    for key, group in runs.groupby(keys, sort=True):
        completed = group["status"] == "completed"
        vals = values[group.index]
        ok = completed & np.isfinite(vals)
        good = vals[ok]
        records.append(
            {
                "config": key,
                "over": plain(group[over_col].iloc[0]) if over_col in group.columns else None,
                "mean": float(good.mean()) if len(good) else math.nan,
                "std": float(good.std(ddof=1)) if len(good) > 1 else math.nan,
                "n": int(len(good)),
                "n_div": int((group["status"] == "diverged").sum()),
                "n_oom": int((group["status"] == "oom").sum()),
                "n_completed": int(completed.sum()),
                "runs": [str(r) for r in group.loc[ok, "run_dir"]],
            }
        )
    return pd.DataFrame.from_records(records, columns=cols)


def _pick(configs: pd.DataFrame, higher_is_better: bool) -> pd.Series | None:
    eligible = configs[configs["n"] > 0]
    if eligible.empty:
        return None
    over = eligible["over"].map(lambda v: _as_float(v) if _as_float(v) is not None else math.inf)
    score = (-eligible["mean"] if higher_is_better else eligible["mean"]).round(12)  # float noise is a tie
    order = pd.DataFrame(
        {"score": score, "seeds": -eligible["n"], "over": over, "config": eligible["config"]}
    )
    best = order.sort_values(["score", "seeds", "over", "config"], kind="stable").index[0]
    return eligible.loc[best]


def count_variants(runs: pd.DataFrame) -> int:
    """How many configurations other than learning-rate points ``runs`` (with an outcome) hold."""
    if "identity.variant" not in runs.columns:
        return 0
    outcomes = runs[runs["status"].isin(OUTCOMES)]
    return int(outcomes["identity.variant"].dropna().nunique())


def select_cell(runs: pd.DataFrame, spec: Spec, row: Row, column: Column) -> Cell:
    """The cell of ``row`` x ``column`` from the spec's runs (see the module docstring)."""
    cell_runs = apply_filter(apply_filter(runs, row.where), column.where)
    configs = configurations(cell_runs, spec, column.select_metric)
    if configs.empty:
        return Cell("none")
    variants = count_variants(cell_runs)
    chosen = _pick(configs, column.select_higher_is_better)
    if chosen is None:
        n_div, n_oom = int(configs["n_div"].sum()), int(configs["n_oom"].sum())
        if configs["n_completed"].sum() or not (n_div or n_oom):
            return Cell("none")
        return Cell("div/oom" if n_div and n_oom else "div" if n_div else "oom")
    chosen_runs = cell_runs[cell_runs["run_dir"].astype(str).isin(chosen["runs"])]
    values = numeric(chosen_runs, column.metric)
    values = values[np.isfinite(values)]
    seed_col = f"identity.{spec.selection.seed}"
    seeds = chosen_runs[seed_col] if seed_col in chosen_runs.columns else chosen_runs["run_dir"]
    per_seed = {plain(seeds[i]): float(v) for i, v in values.items()}
    lost = {k: int(chosen[f"n_{k}"]) for k in ("div", "oom") if chosen[f"n_{k}"]}
    config = json.loads(chosen["config"])
    if values.empty:
        return Cell(
            "none",
            lost=lost,
            config=config,
            over=chosen["over"],
            runs=list(chosen["runs"]),
            variants=variants,
        )
    return Cell(
        "ok",
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else None,
        n=int(len(values)),
        lost=lost,
        config=config,
        over=chosen["over"],
        select_mean=float(chosen["mean"]),
        runs=list(chosen["runs"]),
        variants=variants,
        per_seed=per_seed,
    )


def select_cells(df: pd.DataFrame, spec: Spec) -> tuple[list[Row], dict[tuple[str, str], Cell]]:
    """Rows and {(row label, column label): Cell} for every row x column of the spec."""
    runs = spec_runs(df, spec)
    rows = resolve_rows(df, spec)
    cells = {(r.label, c.label): select_cell(runs, spec, r, c) for r in rows for c in spec.columns}
    return rows, cells


def completed_seeds(df: pd.DataFrame, spec: Spec) -> list:
    """The distinct seeds of the spec's completed runs, numbers in numeric order."""
    runs = spec_runs(df, spec)
    column = f"identity.{spec.selection.seed}"
    if column not in runs.columns:
        return []
    found = {plain(s) for s in runs.loc[runs["status"] == "completed", column] if plain(s) is not None}
    return sorted(found, key=lambda s: (_as_float(s) is None, _as_float(s) or 0.0, str(s)))


def split_seeds(seeds: list) -> tuple[tuple, tuple] | None:
    """(seeds to choose the LR on, held-out seeds to test on): the first half and the rest, or None
    below MIN_SPLIT_SEEDS."""
    if len(seeds) < MIN_SPLIT_SEEDS:
        return None
    half = len(seeds) // 2
    return tuple(seeds[:half]), tuple(seeds[half:])


def held_out_cell(runs: pd.DataFrame, spec: Spec, row: Row, column: Column, split: tuple) -> Cell:
    """The configuration the rule picks on ``split[0]``'s seeds, with the values of its runs on the
    seeds of ``split[1]`` only (a cell of the chosen configuration; "none" if it has none there)."""
    seed = spec.selection.seed
    chosen = select_cell(apply_filter(runs, {seed: split[0]}), spec, row, column)
    if chosen.status != "ok":
        return chosen
    held = apply_filter(apply_filter(apply_filter(runs, row.where), column.where), {seed: split[1]})
    same = config_keys(held, seed) == json.dumps(chosen.config, sort_keys=True, default=str)
    return select_cell(held[same], spec, row, column)


def held_out_cells(
    df: pd.DataFrame, spec: Spec, rows: list[Row], split: tuple
) -> dict[tuple[str, str], Cell]:
    """:func:`held_out_cell` for every row x column of the spec."""
    runs = spec_runs(df, spec)
    return {(r.label, c.label): held_out_cell(runs, spec, r, c, split) for r in rows for c in spec.columns}
