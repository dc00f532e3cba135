"""Report specs: declarative YAML files in configs/report/ that say how a table (and its figures) is made.

A spec names which runs to use, what a row and a column are, which metric a cell shows, how one
learning rate is chosen among the swept ones, and where the published numbers are. Example
(docs/reports.md documents every key)::

    name: table3_ablation            # output file stem (default: the file's stem)
    suite: paper                     # `alphaadam tables` with no names builds every spec of --suite
    title: "Table 3: ..."
    caption: "free text appended to the generated caption"
    runs: {root: results/runs, recipe: pretrain_gpt, experiment: paper/ablation_gpt2,
           identity: {model: gpt2_125m}}
    rows:
      key: optimizer                 # identity field that `value` refers to
      header: Method
      items:
        - {value: adamw, label: AdamW, paper: AdamW}          # paper: row label in the reference block
        - {where: {optimizer: galore, rank: 8}, label: "GaLore (rank=8)"}
    columns:
      - {label: "20%", metric: metrics.at_fraction.0.2.val_loss, paper: step20}
      - {label: MRPC, where: {task: mrpc}, metric: metrics.best.f1, scale: 100, decimals: 2}
    averages: [{label: "Avg(Early)", of: ["20%", "40%"], paper: avg_early}]
    values: {scale: 1, decimals: 3, higher_is_better: false}     # column defaults
    selection: {rule: best_mean_over_seeds, metric: metrics.final.val_loss, over: lr, seed: seed}
    baseline: {row: AdamW, test: auto, alpha: 0.05, split: false}   # docs/statistics.md
    speed_to_target: {metric: val_loss, x: [step, tokens, time_s], column: "100%"}
    reference: {source: alphaadam_2501.18094.table3_ablation_gpt2_125m, label: "...", transpose: false}
    figures: {loss_curves: {y: [val_loss]}, lr_sensitivity: true, alpha: true, resources: true}
    outputs: {dir: results/paper}

Metric names are the flattened columns of the run index (see :mod:`alphaadam.report.collect`):
``metrics.final.<m>``, ``metrics.best.<m>``, ``metrics.at_fraction.<f>.<m>``, ``timing.<k>``, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alphaadam.paths import CONFIG_DIR
from alphaadam.report.errors import SpecError
from alphaadam.report.stats import INTERVALS, SPEED_AXES, TESTS

SPEC_DIR = CONFIG_DIR / "report"
DEFAULT_RUNS_ROOT = "results/runs"
DEFAULT_OUT_DIR = "results/paper"
DEFAULT_REFERENCE_FILE = "results/reference/paper_numbers.yaml"
SELECTION_RULES = ("best_mean_over_seeds",)
LOSS_CURVE_X = ("step", "time_s")

Filter = dict[str, tuple[Any, ...]]  # field -> accepted values


@dataclass(frozen=True)
class Row:
    label: str
    where: Filter
    paper: str | None = None


@dataclass(frozen=True)
class Column:
    label: str
    metric: str
    where: Filter
    scale: float
    decimals: int
    higher_is_better: bool
    select_metric: str  # the metric the configuration (LR) is chosen on
    select_higher_is_better: bool
    paper: str | None = None
    panel: str | None = None  # figure panel title; columns with the same `where` share a panel


@dataclass(frozen=True)
class Average:
    label: str
    of: tuple[str, ...]
    paper: str | None = None


@dataclass(frozen=True)
class Selection:
    rule: str = "best_mean_over_seeds"
    over: str = "lr"
    seed: str = "seed"


@dataclass(frozen=True)
class Reference:
    source: str  # dotted path into the published-numbers file
    file: str = DEFAULT_REFERENCE_FILE
    label: str = ""
    transpose: bool = False  # the block's columns are our rows (e.g. Table 2: optimizers as columns)


@dataclass(frozen=True)
class LossCurves:
    y: tuple[str, ...] = ("train_loss", "val_loss")
    x: tuple[str, ...] = LOSS_CURVE_X
    smooth: int = 1  # rolling mean over this many logged points (per run, before the seed mean)
    logy: bool = False


@dataclass(frozen=True)
class Figures:
    loss_curves: LossCurves | None = None
    lr_sensitivity: bool = False
    alpha: bool = False
    resources: bool = False


@dataclass(frozen=True)
class Baseline:
    """The row every other row is compared with, column by column (see alphaadam/report/stats.py)."""

    row: str
    test: str = "auto"  # auto | t | sign_flip
    alpha: float = 0.05  # a cell whose p-value is below this gets the marker
    split: bool = False  # choose the LR on half of the seeds, test on the other half (tables.py)


@dataclass(frozen=True)
class SpeedToTarget:
    """Columns saying when each row reaches the baseline's final ``metric`` (a metrics.jsonl key)."""

    metric: str = "val_loss"
    x: tuple[str, ...] = ("step", "tokens", "time_s")
    column: str | None = None  # whose selected runs are read; None: the last column


@dataclass(frozen=True)
class RunFilter:
    roots: tuple[str, ...] = (DEFAULT_RUNS_ROOT,)
    recipe: tuple[Any, ...] = ()
    experiment: tuple[Any, ...] = ()
    identity: Filter = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    runs: RunFilter
    row_key: str | None
    row_header: str
    rows: tuple[Row, ...] | None  # None: one row per value of row_key found in the runs
    columns: tuple[Column, ...]
    averages: tuple[Average, ...] = ()
    selection: Selection = Selection()
    reference: Reference | None = None
    figures: Figures = Figures()
    table: bool = True
    out_dir: str = DEFAULT_OUT_DIR
    suite: str = "paper"
    caption: str = ""
    path: str = ""
    interval: str = "std"  # what follows "±" in a cell: ci95 | std | none
    baseline: Baseline | None = None
    speed_to_target: SpeedToTarget | None = None


# --- validation helpers -------------------------------------------------------------------------


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str):
        raise SpecError(f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}")

    def mapping(self, where: str, value, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            self.fail(where, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
        missing = [k for k in required if value.get(k) is None]
        if missing:
            self.fail(where, f"missing required key(s) {', '.join(map(repr, missing))}")
        return value

    def string(self, where: str, value, default=None) -> str | None:
        if value is None:
            return default
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(where, f"expected a string, got {type(value).__name__}")
        return str(value)

    def boolean(self, where: str, value, default=None) -> bool | None:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {value!r}")
        return value

    def number(self, where: str, value, default=None) -> float | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, got {value!r}")
        return float(value)

    def integer(self, where: str, value, default=None, low: int = 0) -> int | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(where, f"expected an integer >= {low}, got {value!r}")
        return value

    def values(self, where: str, value) -> tuple:
        """A scalar or a list of scalars, as a tuple."""
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, (dict, list)):
                self.fail(where, f"expected a scalar or a list of scalars, got {item!r}")
        return tuple(items)

    def strings(self, where: str, value, default=()) -> tuple[str, ...]:
        if value is None:
            return tuple(default)
        return tuple(self.string(where, v) for v in self.values(where, value))

    def filter(self, where: str, value) -> Filter:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping of field: value(s), got {type(value).__name__}")
        return {str(k): self.values(f"{where}.{k}", v) for k, v in value.items()}


# --- parsing --------------------------------------------------------------------------------------

_TOP = (
    "name",
    "suite",
    "title",
    "caption",
    "runs",
    "rows",
    "columns",
    "averages",
    "values",
    "selection",
    "reference",
    "figures",
    "table",
    "outputs",
    "baseline",
    "speed_to_target",
)


def parse_spec(data, source: str = "<spec>", default_name: str | None = None) -> Spec:
    """Validate a spec mapping (as loaded from YAML); errors name ``source`` and the bad key."""
    c = _Checker(source)
    top = c.mapping("", data, _TOP, required=("title", "rows", "columns"))

    runs_raw = c.mapping("runs", top.get("runs"), ("root", "recipe", "experiment", "identity"))
    runs = RunFilter(
        roots=c.strings("runs.root", runs_raw.get("root"), (DEFAULT_RUNS_ROOT,)),
        recipe=c.values("runs.recipe", runs_raw["recipe"]) if runs_raw.get("recipe") is not None else (),
        experiment=(
            c.values("runs.experiment", runs_raw["experiment"])
            if runs_raw.get("experiment") is not None
            else ()
        ),
        identity=c.filter("runs.identity", runs_raw.get("identity")),
    )

    values = c.mapping("values", top.get("values"), ("scale", "decimals", "higher_is_better", "interval"))
    interval = c.string("values.interval", values.get("interval"), "std")
    if interval not in INTERVALS:
        c.fail("values.interval", f"{interval!r} is not one of {', '.join(INTERVALS)}")
    default_scale = c.number("values.scale", values.get("scale"), 1.0)
    default_decimals = c.integer("values.decimals", values.get("decimals"), 3)
    default_hib = c.boolean("values.higher_is_better", values.get("higher_is_better"))

    sel = c.mapping("selection", top.get("selection"), ("rule", "metric", "higher_is_better", "over", "seed"))
    rule = c.string("selection.rule", sel.get("rule"), "best_mean_over_seeds")
    if rule not in SELECTION_RULES:
        c.fail("selection.rule", f"unknown rule {rule!r}; known: {', '.join(SELECTION_RULES)}")
    selection = Selection(
        rule=rule,
        over=c.string("selection.over", sel.get("over"), "lr"),
        seed=c.string("selection.seed", sel.get("seed"), "seed"),
    )
    sel_metric = c.string("selection.metric", sel.get("metric"))
    sel_hib = c.boolean("selection.higher_is_better", sel.get("higher_is_better"))

    rows_raw = c.mapping("rows", top.get("rows"), ("key", "header", "items"))
    row_key = c.string("rows.key", rows_raw.get("key"))
    rows = None
    if rows_raw.get("items") is not None:
        if not isinstance(rows_raw["items"], list) or not rows_raw["items"]:
            c.fail("rows.items", "expected a non-empty list")
        rows = tuple(
            _parse_row(c, f"rows.items[{i}]", item, row_key) for i, item in enumerate(rows_raw["items"])
        )
        _unique(c, "rows.items", [r.label for r in rows])
    elif row_key is None:
        c.fail("rows", "give `key` (one row per value found) or `items`")

    cols_raw = top.get("columns")
    if not isinstance(cols_raw, list) or not cols_raw:
        c.fail("columns", "expected a non-empty list")
    columns = []
    for i, item in enumerate(cols_raw):
        where = f"columns[{i}]"
        col = c.mapping(
            where,
            item,
            (
                "label",
                "metric",
                "where",
                "scale",
                "decimals",
                "higher_is_better",
                "select",
                "paper",
                "panel",
            ),
            required=("label", "metric"),
        )
        hib = c.boolean(f"{where}.higher_is_better", col.get("higher_is_better"), default_hib)
        if hib is None:
            c.fail(where, "higher_is_better is not set here nor under `values`")
        select = c.mapping(f"{where}.select", col.get("select"), ("metric", "higher_is_better"))
        metric = c.string(f"{where}.metric", col["metric"])
        select_metric = c.string(f"{where}.select.metric", select.get("metric"), sel_metric or metric)
        if select.get("higher_is_better") is not None:
            select_hib = c.boolean(f"{where}.select.higher_is_better", select["higher_is_better"])
        elif select_metric == metric:
            select_hib = hib
        elif sel_hib is not None:
            select_hib = sel_hib
        else:
            select_hib = default_hib if default_hib is not None else hib
        label = c.string(f"{where}.label", col["label"])
        columns.append(
            Column(
                label=label,
                metric=metric,
                where=c.filter(f"{where}.where", col.get("where")),
                scale=c.number(f"{where}.scale", col.get("scale"), default_scale),
                decimals=c.integer(f"{where}.decimals", col.get("decimals"), default_decimals),
                higher_is_better=hib,
                select_metric=select_metric,
                select_higher_is_better=select_hib,
                paper=c.string(f"{where}.paper", col.get("paper")),
                panel=c.string(f"{where}.panel", col.get("panel")),
            )
        )

    averages = []
    avg_raw = top.get("averages") or []
    if not isinstance(avg_raw, list):
        c.fail("averages", "expected a list")
    labels = [col.label for col in columns]
    for i, item in enumerate(avg_raw):
        where = f"averages[{i}]"
        avg = c.mapping(where, item, ("label", "of", "paper"), required=("label",))
        of = c.strings(f"{where}.of", avg.get("of"), labels)
        unknown = [name for name in of if name not in labels]
        if unknown:
            c.fail(f"{where}.of", f"no column labelled {', '.join(map(repr, unknown))}")
        averages.append(
            Average(
                c.string(f"{where}.label", avg["label"]), of, c.string(f"{where}.paper", avg.get("paper"))
            )
        )
    _unique(c, "columns and averages", labels + [a.label for a in averages])

    reference = None
    if top.get("reference") is not None:
        ref = c.mapping("reference", top["reference"], ("source", "file", "label", "transpose"), ("source",))
        source_path = c.string("reference.source", ref["source"])
        reference = Reference(
            source=source_path,
            file=c.string("reference.file", ref.get("file"), DEFAULT_REFERENCE_FILE),
            label=c.string("reference.label", ref.get("label"), source_path),
            transpose=c.boolean("reference.transpose", ref.get("transpose"), False),
        )

    baseline = None
    if top.get("baseline") is not None:
        raw = top["baseline"] if isinstance(top["baseline"], dict) else {"row": top["baseline"]}
        raw = c.mapping("baseline", raw, ("row", "test", "alpha", "split"), required=("row",))
        baseline = Baseline(
            row=c.string("baseline.row", raw["row"]),
            test=c.string("baseline.test", raw.get("test"), "auto"),
            alpha=c.number("baseline.alpha", raw.get("alpha"), 0.05),
            split=c.boolean("baseline.split", raw.get("split"), False),
        )
        if baseline.test not in TESTS:
            c.fail("baseline.test", f"{baseline.test!r} is not one of {', '.join(TESTS)}")
        if not 0 < baseline.alpha < 1:
            c.fail("baseline.alpha", f"{baseline.alpha} is not in (0, 1)")
        if rows is not None and baseline.row not in [r.label for r in rows]:
            c.fail(
                "baseline.row", f"no row labelled {baseline.row!r}; rows: {', '.join(r.label for r in rows)}"
            )
    speed = None
    if top.get("speed_to_target") not in (None, False):
        raw = {} if top["speed_to_target"] is True else top["speed_to_target"]
        raw = c.mapping("speed_to_target", raw, ("metric", "x", "column"))
        x = c.strings("speed_to_target.x", raw.get("x"), SpeedToTarget.x)
        bad = [v for v in x if v not in SPEED_AXES]
        if bad:
            c.fail("speed_to_target.x", f"unknown {bad}; choose from {', '.join(SPEED_AXES)}")
        speed = SpeedToTarget(
            metric=c.string("speed_to_target.metric", raw.get("metric"), "val_loss"),
            x=x,
            column=c.string("speed_to_target.column", raw.get("column")),
        )
        if baseline is None:
            c.fail("speed_to_target", "needs a `baseline` row (its final loss is the target)")
        if speed.column is not None and speed.column not in labels:
            c.fail("speed_to_target.column", f"no column labelled {speed.column!r}")
    figures = _parse_figures(c, top.get("figures"))
    outputs = c.mapping("outputs", top.get("outputs"), ("dir",))
    name = c.string("name", top.get("name"), default_name)
    if not name:
        c.fail("name", "missing (and no file name to default to)")
    return Spec(
        name=name,
        title=c.string("title", top["title"]),
        runs=runs,
        row_key=row_key,
        row_header=c.string("rows.header", rows_raw.get("header"), "Optimizer"),
        rows=rows,
        columns=tuple(columns),
        averages=tuple(averages),
        selection=selection,
        reference=reference,
        figures=figures,
        table=c.boolean("table", top.get("table"), True),
        out_dir=c.string("outputs.dir", outputs.get("dir"), DEFAULT_OUT_DIR),
        suite=c.string("suite", top.get("suite"), "paper"),
        caption=c.string("caption", top.get("caption"), "").strip(),
        path=source,
        interval=interval,
        baseline=baseline,
        speed_to_target=speed,
    )


def _parse_row(c: _Checker, where: str, item, row_key: str | None) -> Row:
    if not isinstance(item, dict):  # a bare value: `- adamw`
        item = {"value": item}
    row = c.mapping(where, item, ("value", "where", "label", "paper"))
    filt = c.filter(f"{where}.where", row.get("where"))
    if "value" in row:
        if row_key is None:
            c.fail(where, "`value` needs `rows.key`")
        filt = {row_key: c.values(f"{where}.value", row["value"]), **filt}
    if not filt:
        c.fail(where, "give `value` or `where`")
    default_label = str(row["value"]) if "value" in row else None
    label = c.string(f"{where}.label", row.get("label"), default_label)
    if label is None:
        c.fail(where, "a row given by `where` needs a `label`")
    return Row(label=label, where=filt, paper=c.string(f"{where}.paper", row.get("paper")))


def _parse_figures(c: _Checker, raw) -> Figures:
    raw = c.mapping("figures", raw, ("loss_curves", "lr_sensitivity", "alpha", "resources"))

    def switch(key: str) -> bool:
        value = raw.get(key)
        if value is None or value is False:
            return False
        if value is True:
            return True
        c.mapping(f"figures.{key}", value, ())  # `{}` means on, with no options
        return True

    loss = raw.get("loss_curves")
    curves = None
    if loss is True or isinstance(loss, dict):
        opts = c.mapping("figures.loss_curves", {} if loss is True else loss, ("y", "x", "smooth", "logy"))
        x = c.strings("figures.loss_curves.x", opts.get("x"), LOSS_CURVE_X)
        bad = [v for v in x if v not in LOSS_CURVE_X]
        if bad:
            c.fail("figures.loss_curves.x", f"unknown {bad}; choose from {', '.join(LOSS_CURVE_X)}")
        curves = LossCurves(
            y=c.strings("figures.loss_curves.y", opts.get("y"), LossCurves.y),
            x=x,
            smooth=c.integer("figures.loss_curves.smooth", opts.get("smooth"), 1, low=1),
            logy=c.boolean("figures.loss_curves.logy", opts.get("logy"), False),
        )
    elif loss not in (None, False):
        c.fail("figures.loss_curves", f"expected true, false or a mapping, got {loss!r}")
    return Figures(
        loss_curves=curves,
        lr_sensitivity=switch("lr_sensitivity"),
        alpha=switch("alpha"),
        resources=switch("resources"),
    )


def _unique(c: _Checker, where: str, labels: list[str]) -> None:
    seen = set()
    for label in labels:
        if label in seen:
            c.fail(where, f"label {label!r} is used twice")
        seen.add(label)


# --- loading --------------------------------------------------------------------------------------


def spec_path(name_or_path: str | Path, spec_dir: str | Path = SPEC_DIR) -> Path:
    """``table1_glue`` -> configs/report/table1_glue.yaml; an existing path is taken as is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return Path(spec_dir) / f"{name_or_path}.yaml"


def load_spec(name_or_path: str | Path, spec_dir: str | Path = SPEC_DIR) -> Spec:
    path = spec_path(name_or_path, spec_dir)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        available = ", ".join(p.stem for p in sorted(Path(spec_dir).glob("*.yaml"))) or "none"
        raise SpecError(f"{path}: no such report spec (specs in {spec_dir}: {available})") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, source=str(path), default_name=path.stem)


def find_specs(spec_dir: str | Path = SPEC_DIR, suite: str | None = "paper") -> list[Spec]:
    """Every spec in ``spec_dir`` (sorted by file name), keeping those of ``suite`` (None: all)."""
    specs = [load_spec(p) for p in sorted(Path(spec_dir).glob("*.yaml"))]
    return [s for s in specs if suite is None or s.suite == suite]
