"""Entry points behind ``alphaadam collect | tables | figures`` (callable from Python as well).

Example, as `make demo` would use it::

    from alphaadam.report.build import write_tables, write_figures
    write_tables(["demo"])     # results/demo/demo.md, .tex, .cells.csv from results/demo/runs
    write_figures(["demo"])    # results/demo/demo_*.png and .pdf
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from alphaadam.report.collect import DEFAULT_INDEX_DIR, collect, write_index
from alphaadam.report.errors import ReportError
from alphaadam.report.figures import DEFAULT_BENCH, Log, bench_figure, make_figures
from alphaadam.report.select import apply_filter, spec_runs
from alphaadam.report.spec import DEFAULT_RUNS_ROOT, SPEC_DIR, Spec, find_specs, load_spec
from alphaadam.report.tables import build_table, write_table


def existing_roots(roots: Iterable[str | Path]) -> list[str | Path]:
    """``roots`` when each exists; a typo'd or not-yet-made root would give an empty table."""
    missing = [str(r) for r in roots if not Path(r).exists()]
    if missing:
        raise ReportError(
            f"run root {', '.join(missing)} does not exist: run the study first, "
            "or name where its runs are with --runs DIR"
        )
    return list(roots)


def check_metrics(df: pd.DataFrame, spec: Spec) -> None:
    """Each column whose runs exist must name a metric those runs recorded (a typo would give "—")."""
    completed = spec_runs(df, spec)
    completed = completed[completed["status"] == "completed"]
    for column in spec.columns:
        for metric in {column.metric, column.select_metric}:
            if metric not in df.columns and not apply_filter(completed, column.where).empty:
                known = sorted(c for c in df.columns if c.startswith("metrics.final."))
                raise ReportError(
                    f"{spec.path or spec.name}: column {column.label!r} reads {metric!r}, which no run "
                    f"recorded; recorded metrics include {', '.join(known) or 'none'}"
                )


def collect_index(
    roots: Iterable[str | Path] = (DEFAULT_RUNS_ROOT,),
    out_dir: str | Path = DEFAULT_INDEX_DIR,
    log: Log = print,
) -> tuple[pd.DataFrame, list[Path]]:
    """Scan ``roots``, write ``runs.csv`` and ``runs.parquet`` under ``out_dir``."""
    roots = existing_roots(roots)
    df = collect(roots, log=log)
    paths = write_index(df, out_dir)
    by_status = df["status"].value_counts().to_dict() if len(df) else {}
    summary = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "no runs"
    where = ", ".join(map(str, roots))
    log(f"collect: {len(df)} run(s) ({summary}) from {where} -> {paths[0]}, {paths[1].name}")
    return df, paths


def resolve_specs(
    names: Sequence[str | Path] | None, suite: str | None = "paper", spec_dir: str | Path = SPEC_DIR
) -> list[Spec]:
    """The named specs (names or paths), or every spec of ``suite`` in ``spec_dir``."""
    if names:
        return [load_spec(name, spec_dir) for name in names]
    return find_specs(spec_dir, suite)


class _Runs:
    """Collects each set of run roots once."""

    def __init__(self, roots: Sequence[str | Path] | None, log: Log):
        self.roots, self.log, self.cache = roots, log, {}

    def __call__(self, spec: Spec) -> pd.DataFrame:
        roots = tuple(str(r) for r in (self.roots or spec.runs.roots))
        if roots not in self.cache:
            self.cache[roots] = collect(existing_roots(roots), log=self.log)
        return self.cache[roots]


def write_tables(
    specs: Sequence[str | Path] | None = None,
    *,
    suite: str | None = "paper",
    spec_dir: str | Path = SPEC_DIR,
    roots: Sequence[str | Path] | None = None,
    out_dir: str | Path | None = None,
    log: Log = print,
) -> list[Path]:
    """Build the tables of ``specs`` (default: every spec of ``suite``) from the runs under ``roots``
    (default: each spec's ``runs.root``) into ``out_dir`` (default: each spec's ``outputs.dir``)."""
    runs, paths = _Runs(roots, log), []
    for spec in resolve_specs(specs, suite, spec_dir):
        if not spec.table:
            continue
        df = runs(spec)
        check_metrics(df, spec)
        table = build_table(df, spec)
        written = write_table(table, out_dir or spec.out_dir)
        filled = sum(c.status == "ok" for c in table.cells.values())
        log(f"tables: {spec.name}: {filled}/{len(table.cells)} cells with a value -> {written[0]}")
        paths += written
    return paths


def write_figures(
    specs: Sequence[str | Path] | None = None,
    *,
    suite: str | None = "paper",
    spec_dir: str | Path = SPEC_DIR,
    roots: Sequence[str | Path] | None = None,
    out_dir: str | Path | None = None,
    bench: str | Path | None = DEFAULT_BENCH,
    log: Log = print,
) -> list[Path]:
    """Make the figures of ``specs`` (as in :func:`write_tables`) and, when ``bench`` is given and
    exists, the optimizer benchmark figure (in ``out_dir``, default results/paper)."""
    runs, paths = _Runs(roots, log), []
    for spec in resolve_specs(specs, suite, spec_dir):
        written = make_figures(runs(spec), spec, out_dir or spec.out_dir, log=log)
        if written:
            log(f"figures: {spec.name}: {len(written) // 2} figure(s) -> {Path(written[0]).parent}")
        paths += written
    if bench is not None:
        paths += bench_figure(bench, out_dir or "results/paper", log=log)
    return paths
