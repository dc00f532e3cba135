"""Paper-style tables from a spec: selection (select.py) + published numbers -> Markdown and LaTeX.

Layout: one row per method; a cell reads ``mean ± std (n=seeds)`` (std is the sample std over
seeds; no std for one seed). When the spec has published numbers, each method with a ``paper`` label
gets a sub-row "paper (Δ)" holding the published value and, in brackets, Δ = ours − paper computed
from the rounded value shown. The best of our values per column is bold (ties at the shown precision
are all bold). Cells without a value: "div" (every run diverged), "oom", "div/oom", "—".
Average columns are the mean of the row's cell means (no std); "—" if one of them is missing.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from alphaadam.report.reference import Numbers, load_numbers
from alphaadam.report.select import (
    MIN_SPLIT_SEEDS,
    Cell,
    Row,
    completed_seeds,
    held_out_cells,
    select_cells,
    split_seeds,
)
from alphaadam.report.spec import Column, Spec
from alphaadam.report.stats import (
    SMALL_N,
    Comparison,
    final_value,
    interval,
    paired,
    smallest_sign_flip_p,
    speed_to_target,
)
from alphaadam.runs.files import write_text

DASH = "—"
PAPER_ROW = "paper (Δ)"
METRIC_NAMES = {
    "accuracy": "accuracy",
    "f1": "F1",
    "matthews": "Matthews correlation",
    "pearson": "Pearson correlation",
    "spearman": "Spearman correlation",
    "val_loss": "validation loss",
    "train_loss": "training loss",
}


@dataclass(frozen=True)
class Text:
    """One table cell: ``main`` (may be bold), then a plain ``note``."""

    main: str
    note: str = ""
    bold: bool = False


SPEED_LABELS = {"step": "Steps to target", "tokens": "Tokens to target", "time_s": "Time to target (s)"}
MARKER = "†"


@dataclass
class Table:
    spec: Spec
    rows: list[Row]
    cells: dict[tuple[str, str], Cell]
    averages: dict[tuple[str, str], float | None]
    reference: Numbers | None  # keyed by (paper row label, paper column label)
    bold: set[tuple[str, str]]
    comparisons: dict[tuple[str, str], Comparison | None] = field(default_factory=dict)
    target: float | None = None  # the baseline's final loss (speed to target)
    speeds: dict[str, dict | None] = field(default_factory=dict)  # row label -> {axis: mean} | None
    seeds: list = field(default_factory=list)  # the spec's completed seeds, when baseline.split asks
    split: tuple[tuple, tuple] | None = None  # (seeds the LR is chosen on, seeds tested), if made
    held_out: dict[tuple[str, str], Cell] = field(default_factory=dict)  # the cells tested, if split

    @property
    def values(self) -> list[str]:
        """The labels of the columns and averages (the headers that hold our metric values)."""
        return [c.label for c in self.spec.columns] + [a.label for a in self.spec.averages]

    @property
    def speed_labels(self) -> list[str]:
        speed = self.spec.speed_to_target
        return [SPEED_LABELS[x] for x in speed.x] if speed else []

    @property
    def headers(self) -> list[str]:
        return self.values + self.speed_labels


# --- building -----------------------------------------------------------------------------------


def _fmt(value: float, decimals: int, sign: bool = False) -> str:
    text = f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"
    if re.fullmatch(r"[+-]?0\.?0*", text):  # no "-0.00"
        text = text.replace("-", "+" if sign else "")
    return text


def _column_format(spec: Spec, label: str) -> tuple[float, int, bool]:
    """scale, decimals, higher_is_better of a column or an average (the first column it averages)."""
    by_label = {c.label: c for c in spec.columns}
    if label in by_label:
        col = by_label[label]
    else:
        avg = next(a for a in spec.averages if a.label == label)
        col = by_label[avg.of[0]]
    return col.scale, col.decimals, col.higher_is_better


def shown(table: Table, row: str, label: str) -> float | None:
    """The value displayed for our row in a column, after scaling and rounding (None if none)."""
    scale, decimals, _ = _column_format(table.spec, label)
    if label in {c.label for c in table.spec.columns}:
        cell = table.cells[(row, label)]
        value = cell.mean if cell.status == "ok" else None
    else:
        value = table.averages[(row, label)]
    return None if value is None else round(value * scale, decimals)


def build_table(df: pd.DataFrame, spec: Spec, reference: Numbers | None = None) -> Table:
    """Select cells, compute averages, pick the bold cells; ``reference`` defaults to the spec's."""
    rows, cells = select_cells(df, spec)
    if reference is None and spec.reference is not None:
        reference = load_numbers(spec.reference.file, spec.reference.source, spec.reference.transpose)
    averages = {}
    for row in rows:
        for avg in spec.averages:
            parts = [cells[(row.label, label)] for label in avg.of]
            ok = all(c.status == "ok" for c in parts)
            averages[(row.label, avg.label)] = sum(c.mean for c in parts) / len(parts) if ok else None
    table = Table(spec, rows, cells, averages, reference, set())
    if spec.baseline is not None:
        base = spec.baseline.row
        tested = split_cells(df, table)
        table.comparisons = {
            (row.label, col.label): compare(tested[(row.label, col.label)], tested[(base, col.label)], spec)
            for row in rows
            for col in spec.columns
            if row.label != base and (base, col.label) in cells
        }
    if spec.speed_to_target is not None:
        table.target, table.speeds = speeds_to_target(cells, rows, spec)
    for label in table.values:
        higher = _column_format(spec, label)[2]
        values = {r.label: shown(table, r.label, label) for r in rows}
        present = [v for v in values.values() if v is not None]
        if present:
            best = max(present) if higher else min(present)
            table.bold.update((r, label) for r, v in values.items() if v == best)
    return table


def split_cells(df: pd.DataFrame, table: Table) -> dict[tuple[str, str], Cell]:
    """The cells the baseline comparison pairs: the table's own, or with ``baseline.split`` and
    enough seeds, held-out cells whose LR was chosen on other seeds than the ones tested (select.py)."""
    spec = table.spec
    if not spec.baseline.split:
        return table.cells
    table.seeds = completed_seeds(df, spec)
    table.split = split_seeds(table.seeds)
    if table.split is None:  # too few seeds: the caption says the comparison fell back
        return table.cells
    table.held_out = held_out_cells(df, spec, table.rows, table.split)
    return table.held_out


def compare(cell: Cell, base: Cell, spec: Spec) -> Comparison | None:
    if cell.status != "ok" or base.status != "ok":
        return None
    return paired(cell.per_seed, base.per_seed, spec.baseline.test)


def _curves(cell: Cell) -> list[list[dict]]:
    from alphaadam.report.figures import read_metrics  # matplotlib: only when a spec asks for speed

    return [read_metrics(run) for run in cell.runs]


def speeds_to_target(cells, rows: list[Row], spec: Spec) -> tuple[float | None, dict[str, dict | None]]:
    """The baseline's final loss (mean over its selected runs) and, per row with runs, the step,
    tokens and seconds at which the mean curve of its selected runs reaches it (None: never)."""
    speed = spec.speed_to_target
    column = speed.column or spec.columns[-1].label
    base = cells.get((spec.baseline.row, column))
    target = final_value(_curves(base), speed.metric) if base is not None else None
    if target is None:
        return None, {}
    curves = {r.label: _curves(cells[(r.label, column)]) for r in rows if cells[(r.label, column)].runs}
    return target, {label: speed_to_target(c, target, speed.metric) for label, c in curves.items()}


def speed_text(table: Table, row: Row, label: str) -> Text:
    axis = next(x for x, name in SPEED_LABELS.items() if name == label)
    if table.target is None:
        return Text(DASH)
    if row.label not in table.speeds:  # no runs
        return Text(DASH)
    mine = table.speeds[row.label]
    if mine is None:
        return Text("not reached")
    base = table.speeds.get(table.spec.baseline.row)
    value = mine[axis]
    if not math.isfinite(value):  # the runs did not log this axis
        return Text(DASH)
    main = f"{value:,.0f}" if axis != "time_s" else f"{value:,.1f}"
    if base is None or not base[axis] or not math.isfinite(base[axis]):
        return Text(main)
    return Text(main, f"({value / base[axis]:.2f}×)")


def speed_line(spec: Spec, rows: list[Row], target: float | None, speeds: dict, dashed: bool = False) -> str:
    """One line for a loss-curve figure's caption: steps to the baseline's final loss (``target``,
    from :func:`speeds_to_target`; ``dashed``: the figure draws it as a dashed line), per row."""
    b, metric = spec.baseline.row, spec.speed_to_target.metric
    if target is None:
        return f"Speed to target: no {metric} curve for {b}."
    base = speeds.get(b)
    parts = []
    for row in rows:
        if row.label not in speeds:
            continue
        mine = speeds[row.label]
        if mine is None:
            parts.append(f"{row.label} not reached")
        else:
            ratio = f" ({mine['step'] / base['step']:.2f}×)" if base and base["step"] else ""
            parts.append(f"{row.label} {mine['step']:,.0f}{ratio}")
    drawn = ", dashed" if dashed else ""
    return f"Steps to {b}'s final {metric} ({target:.4f}{drawn}): " + ", ".join(parts) + "."


def paper_value(table: Table, row: Row, label: str) -> float | None:
    if table.reference is None or row.paper is None:
        return None
    by_label = {c.label: c.paper for c in table.spec.columns} | {
        a.label: a.paper for a in table.spec.averages
    }
    if by_label.get(label) is None:
        return None
    return table.reference.get((row.paper, by_label[label]))


def our_text(table: Table, row: Row, label: str) -> Text:
    if label in table.speed_labels:
        return speed_text(table, row, label)
    scale, decimals, _ = _column_format(table.spec, label)
    bold = (row.label, label) in table.bold
    if label not in {c.label for c in table.spec.columns}:  # an average
        value = table.averages[(row.label, label)]
        return Text(_fmt(value * scale, decimals), bold=bold) if value is not None else Text(DASH)
    cell = table.cells[(row.label, label)]
    if cell.status != "ok":
        return Text(DASH if cell.status == "none" else cell.status)
    main = _fmt(cell.mean * scale, decimals)
    spread = interval(list(cell.per_seed.values()), table.spec.interval) if cell.per_seed else None
    if spread is not None:
        main += f" ± {_fmt(spread * scale, decimals)}"
    lost = "".join(f", {v} {k}" for k, v in cell.lost.items())
    versus = ""
    comparison = table.comparisons.get((row.label, label))
    if comparison is not None:
        versus = f"; Δ {_fmt(comparison.diff * scale, decimals, sign=True)}"
        if comparison.p is not None:
            versus += f", p={comparison.p:.2g}"
        if comparison.significant(table.spec.baseline.alpha):
            main += MARKER
    return Text(main, f"(n={cell.n}{lost}{cell.variant_note}{versus})", bold)


def paper_text(table: Table, row: Row, label: str) -> Text:
    value = paper_value(table, row, label)
    if value is None:
        return Text(DASH)
    _, decimals, _ = _column_format(table.spec, label)
    ours = shown(table, row.label, label)
    note = "" if ours is None else f"({_fmt(ours - value, decimals, sign=True)})"
    return Text(_fmt(value, decimals), note)


def grid(table: Table) -> list[tuple[str, bool, list[Text]]]:
    """(row label, is paper sub-row, cells) in display order."""
    lines = []
    for row in table.rows:
        lines.append((row.label, False, [our_text(table, row, h) for h in table.headers]))
        if table.reference is not None and row.paper is not None:
            lines.append((PAPER_ROW, True, [paper_text(table, row, h) for h in table.headers]))
    return lines


# --- caption --------------------------------------------------------------------------------------


def _metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric.rsplit(".", 1)[-1], metric.rsplit(".", 1)[-1])


def _groups(columns: list[Column], key) -> list[tuple[object, list[str]]]:
    groups: dict = {}
    for col in columns:
        groups.setdefault(key(col), []).append(col.label)
    return list(groups.items())


def _listing(groups: list[tuple[object, list[str]]], describe) -> str:
    if len(groups) == 1:
        return describe(groups[0][0])
    return "; ".join(f"{describe(k)} for {', '.join(labels)}" for k, labels in groups)


_FRACTION = re.compile(r"^(metrics\.at_fraction\.)([^.]+\.[^.]+|[^.]+)(\..+)$")


def _metric_fields(columns: list[Column]) -> str:
    """Metric name and field per group of columns; at-fraction fields are folded into one."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for col in columns:
        match = _FRACTION.match(col.metric)
        key = f"{match[1]}{{f}}{match[3]}" if match else col.metric
        groups.setdefault(key, []).append((match[2] if match else "", col.label))
    parts = []
    for key, members in groups.items():
        labels = ", ".join(label for _, label in members)
        if "{f}" in key:
            fractions = ", ".join(f for f, _ in members)
            text = f"{_metric_name(key)} at a fraction f of training ({key}, f = {fractions})"
        else:
            text = f"{_metric_name(key)} ({key})"
        parts.append((text, labels))
    if len(parts) == 1:
        return parts[0][0]
    return "; ".join(f"{text} for {labels}" for text, labels in parts)


def caption(table: Table) -> str:
    spec = table.spec
    cols = list(spec.columns)
    over, seed = spec.selection.over, spec.selection.seed
    scaled = [(s, labels) for s, labels in _groups(cols, lambda c: c.scale) if s != 1]
    if len(scaled) == 1 and len(scaled[0][1]) == len(cols):
        scale = f"×{scaled[0][0]:g}"
    else:
        scale = "; ".join(f"×{s:g} for {', '.join(labels)}" for s, labels in scaled)
    metric = _metric_fields(cols)
    spread = {
        "std": "mean ± sample std",
        "ci95": "mean ± half-width of its 95 % confidence interval (Student t, n − 1 degrees of freedom)",
        "none": "mean",
    }[spec.interval]
    single = "" if spec.interval == "none" else "; a single seed has no interval"
    parts = [
        f"Cells: {spread} over seeds (n = number of {seed}s{single}) of the {metric}"
        + (f", {scale}" if scale else "")
        + "."
    ]
    select = _groups(cols, lambda c: (c.select_metric, c.select_higher_is_better))
    if len(select) == 1:
        (metric_name, higher), _ = select[0]
        criterion = f"row, the configuration ({over}) with the best mean {_metric_name(metric_name)} "
        criterion += f"({metric_name}, {'higher' if higher else 'lower'} is better)"
    elif all(c.select_metric == c.metric and c.select_higher_is_better == c.higher_is_better for c in cols):
        criterion = f"row and column, the configuration ({over}) with the best mean of the cell's metric"
    else:
        criterion = f"row and column, the configuration ({over}) with the best mean " + _listing(
            select, lambda k: f"{_metric_name(k[0])} ({k[0]}, {'higher' if k[1] else 'lower'} is better)"
        )
    ties = f"ties go to more seeds, then the smaller {over}"
    parts.append(f"Selection: per {criterion} over its completed seeds; {ties}.")
    direction = _listing(
        _groups(cols, lambda c: c.higher_is_better), lambda h: "higher is better" if h else "lower is better"
    )
    parts.append(f"Best of ours per column in bold ({direction}).")
    if spec.averages:
        avgs = "; ".join(f"{a.label} = mean of {', '.join(a.of)}" for a in spec.averages)
        parts.append(f"{avgs} (mean of the cell means, no std).")
    if spec.reference is not None:
        parts.append(
            f"Rows '{PAPER_ROW}': the published value ({spec.reference.label}; "
            f"{spec.reference.file}: {spec.reference.source}) and Δ = ours − paper."
        )
    if spec.baseline is not None:
        parts.append(baseline_caption(table))
    if spec.speed_to_target is not None:
        parts.append(speed_caption(table))
    parts.append(
        "div / oom: every run diverged / ran out of memory; —: no result; "
        "'k div' or 'k oom' in a cell: seeds of the selected configuration that did not finish."
    )
    if spec.caption:
        parts.append(spec.caption)
    return " ".join(parts)


TEST_NAMES = {"t": "the paired t-test", "sign_flip": "the exact sign-flip permutation test"}


def baseline_caption(table: Table) -> str:
    spec = table.spec
    b = spec.baseline
    used = sorted({c.test for c in table.comparisons.values() if c is not None and c.p is not None})
    if b.test == "auto":
        how = f"{TEST_NAMES['sign_flip']} below {SMALL_N} pairs, else {TEST_NAMES['t']}"
    else:
        how = TEST_NAMES[b.test]
    ns = sorted({c.n for c in table.comparisons.values() if c is not None and c.test == "sign_flip"})
    floor = (
        f" (with {ns[0]} pairs the sign-flip test cannot go below p = {smallest_sign_flip_p(ns[0]):.2g})"
        if ns and "sign_flip" in used
        else ""
    )
    return (
        f"Δ: the row minus {b.row} in the same column, over the {spec.selection.seed}s both have "
        f"(paired by {spec.selection.seed}: same data order and initialisation); p: two-sided, from "
        f"{how}{floor}; {MARKER}: p < {b.alpha:g}. {selection_caption(table)}"
    )


def selection_caption(table: Table) -> str:
    """Whether Δ and p share their seeds with the choice of the learning rate (selection bias)."""
    spec = table.spec
    seed, over = spec.selection.seed, spec.selection.over
    if table.split is not None:
        chosen, held = (", ".join(map(str, seeds)) for seeds in table.split)
        return (
            f"Held-out split: in every cell (baseline included) the {over} was selected on {seed}s "
            f"{chosen} and Δ and p use only the runs of {seed}s {held}, so the selection does not bias "
            f"them; the cells' values still use the {over} selected on every {seed}. "
            "p-values are not corrected for the number of rows."
        )
    fallback = ""
    if spec.baseline.split:
        fallback = (
            f" The held-out split asked for needs at least {MIN_SPLIT_SEEDS} {seed}s "
            f"({len(table.seeds)} found), so it was not made."
        )
    return (
        f"Each row's {over} was selected on the same runs that are tested, which favours rows with "
        "more points on their grid (selection bias); p-values are not corrected for it nor for the "
        f"number of rows.{fallback}"
    )


def speed_caption(table: Table) -> str:
    speed = table.spec.speed_to_target
    b = table.spec.baseline.row
    column = speed.column or table.spec.columns[-1].label
    target = "unknown (no curve)" if table.target is None else f"{table.target:.4f}"
    return (
        f"{', '.join(table.speed_labels)}: when the {speed.metric} curve of the runs selected for "
        f"column {column} first reaches {b}'s final {speed.metric} ({target}), interpolated between "
        f"evaluations, of the mean curve over seeds, with the ratio to {b}'s (below 1: faster); "
        "not reached: the mean curve never reaches it."
    )


# --- Markdown -------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def _md_cell(text: Text) -> str:
    main = _md_escape(text.main)
    main = f"**{main}**" if text.bold else main
    return f"{main} {_md_escape(text.note)}" if text.note else main


def to_markdown(table: Table) -> str:
    spec = table.spec
    head = [spec.row_header, *table.headers]
    lines = [
        f"**{_md_escape(spec.title)}**",
        "",
        "| " + " | ".join(_md_escape(h) for h in head) + " |",
        "|" + "|".join([":--"] + ["--:"] * len(table.headers)) + "|",
    ]
    for label, sub, cells in grid(table):
        first = f"*{_md_escape(label)}*" if sub else _md_escape(label)
        lines.append("| " + " | ".join([first] + [_md_cell(c) for c in cells]) + " |")
    lines += ["", caption(table), ""]
    return "\n".join(lines)


# --- LaTeX ----------------------------------------------------------------------------------------

_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
    "−": r"$-$",
    "—": "--",
    "–": "--",
    "α": r"$\alpha$",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    text = "".join(_LATEX.get(ch, ch) for ch in text)
    return re.sub(r"(?<![\w.$])-(?=\d)", r"$-$", text)  # a minus sign, not a hyphen


def _tex_cell(text: Text) -> str:
    main = latex_escape(text.main)
    main = rf"\textbf{{{main}}}" if text.bold else main
    return f"{main} {latex_escape(text.note)}" if text.note else main


def to_latex(table: Table) -> str:
    spec = table.spec
    head = [spec.row_header, *table.headers]
    lines = [
        f"% Generated by `alphaadam tables` from {spec.path or spec.name}; do not edit.",
        r"% Needs \usepackage{booktabs}.",
        r"\begin{table}[ht]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(spec.title)}. {latex_escape(caption(table))}}}",
        rf"\label{{tab:{spec.name}}}",
        rf"\begin{{tabular}}{{l{'r' * len(table.headers)}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in head) + r" \\",
        r"\midrule",
    ]
    body = grid(table)
    for i, (label, sub, cells) in enumerate(body):
        first = rf"\quad\textit{{{latex_escape(label)}}}" if sub else latex_escape(label)
        lines.append(" & ".join([first] + [_tex_cell(c) for c in cells]) + r" \\")
        if sub and i + 1 < len(body):
            lines.append(r"\addlinespace")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


# --- outputs --------------------------------------------------------------------------------------


def cells_frame(table: Table) -> pd.DataFrame:
    """One line per row x column: the numbers behind the table, the selected configuration."""
    records = []
    for row in table.rows:
        for col in table.spec.columns:
            cell = table.cells[(row.label, col.label)]
            records.append(
                {
                    "row": row.label,
                    "column": col.label,
                    "status": cell.status,
                    "mean": cell.mean,
                    "std": cell.std,
                    "ci95": interval(list(cell.per_seed.values()), "ci95") if cell.per_seed else None,
                    "n": cell.n,
                    "scale": col.scale,
                    "metric": col.metric,
                    "selected_" + table.spec.selection.over: cell.over,
                    "select_metric": col.select_metric,
                    "select_mean": cell.select_mean,
                    "lost": ", ".join(f"{v} {k}" for k, v in cell.lost.items()),
                    "paper": paper_value(table, row, col.label),
                    "config": json.dumps(cell.config, sort_keys=True) if cell.config else "",
                    "runs": ";".join(cell.runs),
                    **comparison_fields(table.comparisons.get((row.label, col.label))),
                    **held_out_fields(table, row, col),
                }
            )
    return pd.DataFrame.from_records(records)


def comparison_fields(comparison: Comparison | None) -> dict:
    if comparison is None:
        return {"diff_vs_baseline": None, "pairs": None, "p": None, "test": None}
    return {
        "diff_vs_baseline": comparison.diff,
        "pairs": comparison.n,
        "p": comparison.p,
        "test": comparison.test,
    }


def held_out_fields(table: Table, row: Row, col: Column) -> dict:
    """The held-out split's choice (only in tables that made one, so other tables keep their columns)."""
    if table.split is None:
        return {}
    held = table.held_out[(row.label, col.label)]
    over = table.spec.selection.over
    return {f"held_out_{over}": held.over, "held_out_n": held.n}


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    """``<name>.md``, ``<name>.tex`` and ``<name>.cells.csv`` under ``out_dir``."""
    out_dir = Path(out_dir)
    name = table.spec.name
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.tex", out_dir / f"{name}.cells.csv"]
    write_text(paths[0], to_markdown(table))
    write_text(paths[1], to_latex(table))
    write_text(paths[2], cells_frame(table).to_csv(index=False))
    return paths
