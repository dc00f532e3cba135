"""Figures from run results, PNG and PDF (matplotlib's object API, no pyplot state, no display).

Driven by a spec's ``figures`` block and its selection (select.py): a *panel* is a group of columns
with the same run filter (``where``), e.g. one per task or model size; a line is a row (optimizer).

- ``<name>_loss_<y>``       loss against step and wall-clock, selected configuration, mean over seeds
                            with a ±1 std band (Figure 2 / Figure 3 style)
- ``<name>_lr_sensitivity`` selection metric against the swept LR (log x), every configuration;
                            "x" marks an LR whose runs all diverged, a square one that ran out of memory
- ``<name>_alpha_final``    per-parameter alpha and mask density at the last recorded step (box per optimizer)
- ``<name>_alpha_training`` alpha and mask density over training: median and 10-90 % band over parameters
- ``<name>_alpha_heatmap``  alpha of every parameter tensor over training, one optimizer per panel
                            (Figures 4-5 style; first seed of the selected configuration)
- ``<name>_resources``      optimizer-state bytes per parameter, peak memory and step time (bars)
- ``bench_optim_step``      from results/bench/optim_step.json (the optimizer benchmark)

A figure without data is skipped with a printed note; an unreadable input raises a ReportError.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from alphaadam.report.errors import MetricsFileError, ReportError
from alphaadam.report.select import Cell, apply_filter, configurations, plain, select_cells, spec_runs
from alphaadam.report.spec import Column, Spec
from alphaadam.runs.metrics import METRICS_FILE

Log = Callable[[str], None]
DEFAULT_BENCH = Path("results/bench/optim_step.json")
_COLORS = [f"C{i}" for i in range(10)]
_MAX_COLS = 4


# --- inputs ---------------------------------------------------------------------------------------


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The run's metrics.jsonl records; [] without one. A torn last line (killed writer) is dropped."""
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise MetricsFileError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(record, dict):
            raise MetricsFileError(f"{path}:{number}: expected a JSON object")
        records.append(record)
    return records


def _float(value) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def curve(records: list[dict], y: str, smooth: int = 1) -> pd.DataFrame:
    """step, y, time_s of the records that have a finite ``y`` (last record wins per step)."""
    points = [(_float(r.get("step")), _float(r.get(y)), _float(r.get("time_s"))) for r in records if y in r]
    df = pd.DataFrame(points, columns=["step", "y", "time_s"], dtype=float)
    df = df[np.isfinite(df["step"]) & np.isfinite(df["y"])]
    df = df.drop_duplicates("step", keep="last").sort_values("step")
    if smooth > 1 and len(df):
        df["y"] = df["y"].rolling(smooth, min_periods=1).mean()
    return df.reset_index(drop=True)


def seed_mean(curves: list[pd.DataFrame]) -> pd.DataFrame:
    """Per step over the seeds' curves: mean, std (0 for one seed), n, mean wall-clock."""
    curves = [c for c in curves if len(c)]
    if not curves:
        return pd.DataFrame(columns=["step", "mean", "std", "n", "time_s"])
    stacked = pd.concat(curves, keys=range(len(curves)), names=["seed", None])
    grouped = stacked.groupby("step")
    out = pd.DataFrame(
        {
            "mean": grouped["y"].mean(),
            "std": grouped["y"].std(ddof=1).fillna(0.0),
            "n": grouped["y"].count(),
            "time_s": grouped["time_s"].mean(),
        }
    )
    return out.reset_index()


def mask_stats(run_dirs: list[str]) -> pd.DataFrame:
    """run, step, param (name or position), alpha, density from the ``mask_stats`` records."""
    rows = []
    for run in run_dirs:
        for record in read_metrics(run):
            stats = record.get("mask_stats")
            if not isinstance(stats, list):
                continue
            for i, stat in enumerate(stats):
                if not isinstance(stat, dict):
                    continue
                name = stat.get("name")
                if name is None:
                    name = f"{stat.get('group', 0)}.{stat.get('index', i)}"
                rows.append(
                    (
                        run,
                        _float(record.get("step")),
                        str(name),
                        _float(stat.get("alpha")),
                        _float(stat.get("density")),
                    )
                )
    table = pd.DataFrame(rows, columns=["run", "step", "param", "alpha", "density"])
    return table.astype({"step": float, "alpha": float, "density": float})


# --- layout helpers -------------------------------------------------------------------------------


def panels(spec: Spec) -> list[tuple[str, Column]]:
    """(title, first column) per distinct column filter, in column order."""
    groups: dict[str, list[Column]] = {}
    for col in spec.columns:
        groups.setdefault(json.dumps(col.where, sort_keys=True, default=str), []).append(col)
    out = []
    for cols in groups.values():
        first = cols[0]
        title = first.panel if first.panel is not None else (first.label if len(groups) > 1 else "")
        out.append((title, first))
    return out


def _grid(n_panels: int, n_sub: int, width: float = 4.2, height: float = 3.2):
    """A figure with ``n_sub`` axes rows per panel row; returns fig and axes[sub][panel]."""
    ncols = min(n_panels, _MAX_COLS)
    prows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width * ncols, height * prows * n_sub + 0.6), layout="constrained")
    grid = fig.subplots(prows * n_sub, ncols, squeeze=False)
    axes = [[grid[(j // ncols) * n_sub + i][j % ncols] for j in range(n_panels)] for i in range(n_sub)]
    for k in range(n_panels, prows * ncols):  # unused slots of the last panel row
        for i in range(n_sub):
            grid[((k // ncols) * n_sub) + i][k % ncols].set_visible(False)
    return fig, axes


def _legend(fig: Figure, handles: dict[str, object]) -> None:
    if handles:
        ncols = max(1, min(len(handles), int(fig.get_figwidth() // 2.1)))
        fig.legend(
            list(handles.values()),
            list(handles.keys()),
            loc="outside lower center",
            ncols=ncols,
            frameon=False,
            fontsize=8,
        )


def _title(fig: Figure, text: str) -> None:
    """A suptitle wrapped to the figure's width."""
    width = max(30, int(fig.get_figwidth() * 13))
    fig.suptitle(textwrap.fill(text, width), fontsize=9)


def save(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1], metadata={"CreationDate": None})
    return paths


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 3 * 3600:
        return 3600.0, "h"
    if seconds >= 180:
        return 60.0, "min"
    return 1.0, "s"


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")


def _label(metric: str) -> str:
    return metric.rsplit(".", 1)[-1].replace("_", " ")


# --- figures --------------------------------------------------------------------------------------


def loss_curves(spec: Spec, cells: dict[tuple[str, str], Cell], rows, out_dir, log: Log) -> list[Path]:
    paths = []
    for y in spec.figures.loss_curves.y:
        fig = loss_figure(spec, cells, rows, y, log)
        if fig is None:
            log(f"figures: {spec.name}: no {y} curves in metrics.jsonl of the selected runs; skipped")
            continue
        paths += save(fig, out_dir, f"{spec.name}_loss_{y}")
    return paths


def target_panel(spec: Spec, y: str) -> int | None:
    """The panel that shows the speed-to-target column's runs when ``y`` is its metric, else None:
    where the target (the baseline's final value) is drawn."""
    speed = spec.speed_to_target
    if speed is None or speed.metric != y:
        return None
    label = speed.column or spec.columns[-1].label
    where = next(c.where for c in spec.columns if c.label == label)
    return next((p for p, (_, col) in enumerate(panels(spec)) if col.where == where), None)


def loss_figure(spec: Spec, cells: dict[tuple[str, str], Cell], rows, y: str, log: Log) -> Figure | None:
    """``y`` against each of ``loss_curves.x``, a panel per column filter; None without any curve."""
    opts = spec.figures.loss_curves
    plot_panels = panels(spec)
    data = {}
    for p, (_, col) in enumerate(plot_panels):
        for r, row in enumerate(rows):
            cell = cells[(row.label, col.label)]
            mean = seed_mean([curve(read_metrics(run), y, opts.smooth) for run in cell.runs])
            if len(mean):
                data[(p, r)] = mean
    if not data:
        return None
    title = f"{spec.title}: {_label(y)} (mean ± std over seeds, selected LR)"
    dashed = None  # the panel where the target is drawn
    if spec.speed_to_target is not None:  # the caption line: when each row reaches the target
        from alphaadam.report.tables import speed_line, speeds_to_target

        target, speeds = speeds_to_target(cells, rows, spec)
        dashed = target_panel(spec, y) if target is not None else None
        reach = speed_line(spec, rows, target, speeds, dashed is not None)
        title += f". {reach}"
        log(f"figures: {spec.name}: {reach}")
    fig, axes = _grid(len(plot_panels), len(opts.x))
    handles = {}
    for p, (panel_title, _) in enumerate(plot_panels):
        for i, x in enumerate(opts.x):
            ax = axes[i][p]
            panel_data = [(r, data[(p, r)]) for r in range(len(rows)) if (p, r) in data]
            if not panel_data:
                _no_data(ax)
            if x == "time_s":
                longest = max((d["time_s"].max() for _, d in panel_data), default=0.0)
                div, unit = _time_unit(longest if np.isfinite(longest) else 0.0)
            for r, d in panel_data:
                xs = d["step"] if x == "step" else d["time_s"] / div
                color = _COLORS[r % len(_COLORS)]
                (line,) = ax.plot(xs, d["mean"], color=color, lw=1.4)
                if (d["n"] > 1).any():
                    ax.fill_between(
                        xs, d["mean"] - d["std"], d["mean"] + d["std"], color=color, alpha=0.2, lw=0
                    )
                handles.setdefault(rows[r].label, line)
            ax.set_xlabel("step" if x == "step" else f"wall-clock ({unit})")
            ax.set_ylabel(_label(y))
            if opts.logy:
                ax.set_yscale("log")
            if p == dashed:  # the target the title's steps are counted to
                ax.axhline(target, color="0.3", lw=0.9, ls="--")
            if panel_title and i == 0:
                ax.set_title(panel_title)
            ax.grid(alpha=0.3)
    _title(fig, title)
    _legend(fig, handles)
    return fig


def lr_sensitivity(spec: Spec, df: pd.DataFrame, rows, out_dir, log: Log) -> list[Path]:
    runs = spec_runs(df, spec)
    plot_panels = panels(spec)
    fig, axes = _grid(len(plot_panels), 1)
    handles: dict[str, object] = {}
    any_data = False
    for p, (title, col) in enumerate(plot_panels):
        ax = axes[0][p]
        scale = col.scale if col.select_metric == col.metric else 1.0
        finite, failed = [], []
        for r, row in enumerate(rows):
            configs = configurations(
                apply_filter(apply_filter(runs, row.where), col.where), spec, col.select_metric
            )
            configs = configs[configs["over"].map(lambda v: np.isfinite(_float(v)))]
            if configs.empty:
                continue
            color = _COLORS[r % len(_COLORS)]
            points = []
            for over, group in configs.groupby("over"):
                good = group[group["n"] > 0]
                if len(good):
                    pick = good["mean"].idxmax() if col.select_higher_is_better else good["mean"].idxmin()
                    points.append(
                        (float(over), good.loc[pick, "mean"] * scale, good.loc[pick, "std"] * scale)
                    )
                elif group["n_div"].sum() or group["n_oom"].sum():
                    failed.append((float(over), color, "x" if group["n_div"].sum() else "s"))
            if points:
                xs, ys, es = map(np.array, zip(*sorted(points), strict=True))
                handle = ax.errorbar(xs, ys, yerr=np.nan_to_num(es), color=color, marker="o", ms=4, capsize=2)
                handles.setdefault(row.label, handle)
                finite.extend(ys)
        if not finite and not failed:
            _no_data(ax)
            continue
        any_data = True
        if finite:
            low, high = min(finite), max(finite)
            pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
            edge = low - pad if col.select_higher_is_better else high + pad  # worse end of the axis
        else:
            edge = 0.0
        for over, color, marker in failed:
            ax.plot(
                [over],
                [edge],
                marker=marker,
                color=color,
                ls="none",
                ms=7,
                mfc="none" if marker == "s" else color,
            )
        ax.set_xscale("log")
        ax.set_xlabel(spec.selection.over)
        ax.set_ylabel(_label(col.select_metric) + (f" (×{scale:g})" if scale != 1 else ""))
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    if not any_data:
        log(f"figures: {spec.name}: no runs with a numeric {spec.selection.over}; LR sensitivity skipped")
        return []
    handles["diverged"] = Line2D([], [], color="k", marker="x", ls="none")
    handles["out of memory"] = Line2D([], [], color="k", marker="s", mfc="none", ls="none")
    _title(fig, f"{spec.title}: sensitivity to {spec.selection.over} (mean ± std over seeds)")
    _legend(fig, handles)
    return save(fig, out_dir, f"{spec.name}_lr_sensitivity")


def alpha_figures(spec: Spec, cells, rows, out_dir, log: Log) -> list[Path]:
    plot_panels = panels(spec)
    stats = {}
    for p, (_, col) in enumerate(plot_panels):
        for r, row in enumerate(rows):
            table = mask_stats(cells[(row.label, col.label)].runs)
            table = table[np.isfinite(table["step"])]
            if len(table):
                stats[(p, r)] = table
    if not stats:
        log(f"figures: {spec.name}: no mask_stats in the selected runs (no masked optimizer?); alpha skipped")
        return []
    paths = []
    quantities = (("alpha", "α (per parameter tensor)"), ("density", "mask density"))

    # distribution over parameters at the last recorded step
    fig, axes = _grid(len(plot_panels), 2)
    for p, (title, _) in enumerate(plot_panels):
        present = [r for r in range(len(rows)) if (p, r) in stats]
        for i, (field, label) in enumerate(quantities):
            ax = axes[i][p]
            if not present:
                _no_data(ax)
                continue
            data = []
            for r in present:
                t = stats[(p, r)]
                last = t[t["step"] == t.groupby("run")["step"].transform("max")]
                data.append(last[field].dropna().to_numpy())
            box = ax.boxplot(data, tick_labels=[rows[r].label for r in present], patch_artist=True)
            for patch, r in zip(box["boxes"], present, strict=True):
                patch.set_facecolor(_COLORS[r % len(_COLORS)])
                patch.set_alpha(0.5)
            ax.tick_params(axis="x", labelrotation=20)
            ax.set_ylabel(label)
            if title and i == 0:
                ax.set_title(title)
            ax.grid(alpha=0.3, axis="y")
    _title(fig, f"{spec.title}: α and mask density over parameters, last recorded step")
    paths += save(fig, out_dir, f"{spec.name}_alpha_final")

    # over training: median and 10-90 % band over parameters (and seeds)
    fig, axes = _grid(len(plot_panels), 2)
    handles = {}
    for p, (title, _) in enumerate(plot_panels):
        for i, (field, label) in enumerate(quantities):
            ax = axes[i][p]
            present = [r for r in range(len(rows)) if (p, r) in stats]
            if not present:
                _no_data(ax)
            for r in present:
                q = stats[(p, r)].groupby("step")[field].quantile([0.1, 0.5, 0.9]).unstack()
                color = _COLORS[r % len(_COLORS)]
                (line,) = ax.plot(q.index, q[0.5], color=color, lw=1.4)
                ax.fill_between(q.index, q[0.1], q[0.9], color=color, alpha=0.2, lw=0)
                handles.setdefault(rows[r].label, line)
            ax.set_xlabel("step")
            ax.set_ylabel(label)
            if title and i == 0:
                ax.set_title(title)
            ax.grid(alpha=0.3)
    _title(fig, f"{spec.title}: α and mask density during training (median, 10-90 % band)")
    _legend(fig, handles)
    paths += save(fig, out_dir, f"{spec.name}_alpha_training")

    # every parameter over training, first panel with data, first run of each optimizer
    p0 = min(p for p, _ in stats)
    present = [r for r in range(len(rows)) if (p0, r) in stats]
    fig, axes = _grid(len(present), 1, width=4.6, height=3.6)
    for k, r in enumerate(present):
        ax = axes[0][k]
        t = stats[(p0, r)]
        t = t[t["run"] == sorted(t["run"].unique())[0]]
        order = list(dict.fromkeys(t["param"]))
        grid = t.pivot_table(index="param", columns="step", values="alpha", aggfunc="mean").reindex(order)
        steps = grid.columns.to_numpy(dtype=float)
        extent = (steps.min(), steps.max() if len(steps) > 1 else steps.min() + 1, len(order) - 0.5, -0.5)
        image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", interpolation="nearest", extent=extent)
        fig.colorbar(image, ax=ax, label="α")
        ax.set_xlabel("step")
        ax.set_ylabel(f"parameter tensor ({len(order)})")
        ax.set_title(rows[r].label)
    title = plot_panels[p0][0]
    _title(fig, f"{spec.title}: α per parameter tensor{f' ({title})' if title else ''}")
    paths += save(fig, out_dir, f"{spec.name}_alpha_heatmap")
    return paths


_RESOURCES = (
    ("memory.optimizer_state_bytes_per_param", "optimizer state (bytes / parameter)", 1.0),
    ("memory.peak_bytes", "peak memory (GiB)", 2.0**-30),
    ("timing.step_time_s", "step time (s)", 1.0),
)


def resources(spec: Spec, df: pd.DataFrame, cells, rows, out_dir, log: Log) -> list[Path]:
    by_dir = df.set_index(df["run_dir"].astype(str))
    plot_panels = panels(spec)
    values = {}  # (field, panel, row) -> mean over the selected runs
    for field, _, factor in _RESOURCES:
        if field not in by_dir.columns:
            continue
        column = pd.to_numeric(by_dir[field], errors="coerce")
        for p, (_, col) in enumerate(plot_panels):
            for r, row in enumerate(rows):
                runs = [run for run in cells[(row.label, col.label)].runs if run in column.index]
                v = column.loc[runs].dropna() if runs else pd.Series(dtype=float)
                if len(v):
                    values[(field, p, r)] = float(v.mean()) * factor
    fields = [f for f in _RESOURCES if any(k[0] == f[0] for k in values)]
    if not fields:
        log(f"figures: {spec.name}: no memory/timing in the selected runs' result.json; resources skipped")
        return []
    fig = Figure(figsize=(max(4.0, 0.7 * len(rows) + 1.5) * len(fields), 3.6), layout="constrained")
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    width = 0.8 / len(plot_panels)
    for ax, (field, label, _) in zip(axes, fields, strict=True):
        for p, (title, _) in enumerate(plot_panels):
            xs = [r + (p - (len(plot_panels) - 1) / 2) * width for r in range(len(rows))]
            ys = [values.get((field, p, r), np.nan) for r in range(len(rows))]
            colors = [_COLORS[r % len(_COLORS)] for r in range(len(rows))]
            bars = ax.bar(
                xs, ys, width=width, color=colors, alpha=0.45 + 0.55 / (p + 1), edgecolor="k", lw=0.5
            )
            if len(plot_panels) > 1:
                ax.bar_label(
                    bars, labels=[title if np.isfinite(y) else "" for y in ys], fontsize=6, rotation=90
                )
                ax.margins(y=0.15)
        ax.set_xticks(range(len(rows)), [row.label for row in rows], rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    _title(fig, f"{spec.title}: optimizer state, peak memory and step time (selected runs)")
    return save(fig, out_dir, f"{spec.name}_resources")


def bench_figure(path: str | Path, out_dir: str | Path, log: Log = print) -> list[Path]:
    """Bars from the optimizer benchmark JSON ({"results": [{"name", "step_time_s", ...}]})."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        log(f"figures: {path} not found; benchmark figure skipped")
        return []
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON: {exc}") from None
    entries = data.get("results", []) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ReportError(f"{path}: expected a list under 'results'")
    entries = [e for e in entries if isinstance(e, dict) and e.get("name") is not None]
    fields = [
        ("step_time_s", "step time (ms)", 1e3),
        ("ratio_vs_fused_adamw", "step time / fused AdamW", 1.0),
        ("state_bytes_per_param", "optimizer state (bytes / parameter)", 1.0),
    ]
    fields = [f for f in fields if any(np.isfinite(_float(e.get(f[0]))) for e in entries)]
    if not fields:
        log(f"figures: {path} has no benchmark numbers; benchmark figure skipped")
        return []
    names = [str(e["name"]) for e in entries]
    fig = Figure(figsize=(4.2 * len(fields), 0.32 * len(names) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(fields), squeeze=False, sharey=True)[0]
    for ax, (field, label, factor) in zip(axes, fields, strict=True):
        ax.barh(range(len(names)), [_float(e.get(field)) * factor for e in entries], color="C0", alpha=0.7)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
    _title(fig, f"Optimizer step benchmark ({path.name})")
    return save(fig, out_dir, "bench_optim_step")


def make_figures(df: pd.DataFrame, spec: Spec, out_dir: str | Path, log: Log = print) -> list[Path]:
    """Every figure the spec's ``figures`` block asks for; returns the files written."""
    if spec_runs(df, spec).empty:
        log(f"figures: {spec.name}: no runs match the spec; skipped")
        return []
    rows, cells = select_cells(df, spec)
    wanted = spec.figures
    paths: list[Path] = []
    if wanted.loss_curves is not None:
        paths += loss_curves(spec, cells, rows, out_dir, log)
    if wanted.lr_sensitivity:
        paths += lr_sensitivity(spec, df, rows, out_dir, log)
    if wanted.alpha:
        paths += alpha_figures(spec, cells, rows, out_dir, log)
    if wanted.resources:
        paths += resources(spec, df, cells, rows, out_dir, log)
    return paths


__all__ = ["bench_figure", "curve", "make_figures", "mask_stats", "plain", "read_metrics", "seed_mean"]
