"""Every result.json under the run roots, as one pandas DataFrame (one row per run).

Columns (flattened with dots; tables and specs refer to them by these names):

- ``run_dir``, ``run_id``, ``recipe``, ``experiment``, ``status``, ``step``, ``total_steps``,
  ``tokens``, ``error``, ``git_sha``, ``started_at``, ``updated_at``, ``schema``
- ``identity.<field>``                 optimizer, lr, seed, model, task, ...
- ``metrics.final.<m>``, ``metrics.best.<m>``, ``metrics.best_step``
- ``metrics.at_fraction.<f>.<m>``      ``<f>`` normalised to a float's repr: "0.2", "1.0"
- ``timing.<k>``, ``memory.<k>``, ``versions.<package>``

Lists and mappings below these levels are stored as JSON text. Metric values written as the strings
"nan" / "inf" (metrics.jsonl's convention for non-finite floats) become floats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from alphaadam.runs.files import write_bytes, write_text
from alphaadam.runs.result import NESTED_FIELDS, RESULT_FILE, load_result

DEFAULT_INDEX_DIR = Path("results/index")
LEADING = (
    "run_dir",
    "experiment",
    "recipe",
    "status",
    "run_id",
    "step",
    "total_steps",
    "tokens",
    "error",
    "updated_at",
)
_NONFINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf}


def find_result_files(roots: Iterable[str | Path]) -> list[Path]:
    """result.json files under each root (missing roots are skipped), sorted, without duplicates."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if root.is_file() and root.name == RESULT_FILE:
            found.add(root)
        elif root.is_dir():
            found.update(p for p in root.rglob(RESULT_FILE) if p.is_file())
    return sorted(found)


def _scalar(value):
    if isinstance(value, str) and value.strip().lower() in _NONFINITE:
        return _NONFINITE[value.strip().lower()]
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _fraction_key(key: str) -> str:
    try:
        return repr(float(key))
    except ValueError:
        return str(key)


def _flatten(prefix: str, obj, out: dict, depth: int = 0) -> None:
    if isinstance(obj, dict) and depth < 4:
        for key, value in obj.items():
            if prefix == "metrics.at_fraction":
                key = _fraction_key(key)
            _flatten(f"{prefix}.{key}", value, out, depth + 1)
    else:
        out[prefix] = _scalar(obj)


def flatten_result(result: dict, run_dir: str | Path) -> dict:
    """One index row: top-level scalars plus the dotted leaves of identity/metrics/timing/memory."""
    row: dict = {"run_dir": str(run_dir)}
    for key, value in result.items():
        if key in NESTED_FIELDS:
            if key == "identity":  # flat by contract: nested values stay JSON text
                for field, v in (value or {}).items():
                    row[f"identity.{field}"] = _scalar(v)
            else:
                _flatten(key, value or {}, row)
        else:
            row[key] = _scalar(value)
    return row


def collect(
    roots: Iterable[str | Path] = ("results/runs",), log: Callable[[str], None] | None = print
) -> pd.DataFrame:
    """Read every result.json under ``roots`` into a DataFrame (one row per run).

    A run found twice (same ``run_id``, e.g. a copied directory) is kept once: the latest
    ``updated_at`` wins.
    """
    records = []
    for path in find_result_files(roots):
        records.append(flatten_result(load_result(path), path.parent))
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=list(LEADING))
    for col in LEADING:
        if col not in df.columns:
            df[col] = None
    if len(df) and df["run_id"].notna().any():
        before = len(df)
        order = df["updated_at"].fillna("").astype(str)
        df = df.assign(_order=order).sort_values("_order", kind="stable")
        has_id = df["run_id"].notna()
        df = pd.concat([df[has_id].drop_duplicates("run_id", keep="last"), df[~has_id]])
        df = df.drop(columns="_order")
        if log and len(df) < before:
            log(f"collect: {before - len(df)} duplicate run(s) (same run_id) kept once, the latest")
    rest = sorted(c for c in df.columns if c not in LEADING)
    df = df[list(LEADING) + rest].sort_values("run_dir", kind="stable").reset_index(drop=True)
    return df


def _tabular(df: pd.DataFrame) -> pd.DataFrame:
    """Columns with mixed Python types (e.g. ``identity.rank`` 8 and "full") as text, for Parquet."""
    df = df.copy()
    for col in df.columns:
        if df[col].dtype != object:
            continue
        kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if not kinds:
            df[col] = pd.Series([None] * len(df), index=df.index, dtype="str")
        elif kinds <= {int, float}:
            df[col] = pd.to_numeric(df[col])
        elif len(kinds) > 1:
            df[col] = df[col].map(lambda v: None if v is None or v != v else str(v)).astype("str")
    return df


def write_index(df: pd.DataFrame, out_dir: str | Path = DEFAULT_INDEX_DIR) -> list[Path]:
    """Write ``runs.csv`` and ``runs.parquet`` under ``out_dir`` atomically; returns their paths."""
    out_dir = Path(out_dir)
    table = _tabular(df)
    csv_path, parquet_path = out_dir / "runs.csv", out_dir / "runs.parquet"
    write_text(csv_path, table.to_csv(index=False))
    write_bytes(parquet_path, table.to_parquet(index=False))
    return [csv_path, parquet_path]
