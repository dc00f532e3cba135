"""Published numbers (results/reference/paper_numbers.yaml), as {(row label, column label): value}.

A block is addressed by a dotted path, e.g. ``alphaadam_2501.18094.table3_ablation_gpt2_125m``
(keys may themselves contain dots: the longest key that matches is taken). Two block shapes are read:

- ``columns: [...]`` and ``rows: {label: [values] | {values: [...], ...}}`` (Tables 1 and 3);
- ``columns: [...]`` and one list per row at the block's top level (Table 2:
  ``accuracy: [...]``, ``train_loss: [...]``).

``transpose=True`` swaps rows and columns (Table 2 lists optimizers as columns).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from alphaadam.report.errors import ReferenceFileError

Numbers = dict[tuple[str, str], float]


def load_reference_file(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ReferenceFileError(
            f"{path}: published numbers not found (copy them there from the team's reference file)"
        ) from None
    except yaml.YAMLError as exc:
        raise ReferenceFileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ReferenceFileError(f"{path}: expected a mapping at the top level")
    return data


def find_block(data: dict, source: str, path: str | Path = "<reference>") -> dict:
    node, rest = data, source
    while rest:
        if not isinstance(node, dict):
            break
        keys = sorted((k for k in node if rest == k or rest.startswith(f"{k}.")), key=len, reverse=True)
        if not keys:
            break
        node, rest = node[keys[0]], rest[len(keys[0]) + 1 :]
    else:
        if isinstance(node, dict):
            return node
    raise ReferenceFileError(f"{path}: no table block {source!r}")


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def block_numbers(block: dict, source: str = "<block>", transpose: bool = False) -> Numbers:
    columns = block.get("columns")
    if not isinstance(columns, list):
        raise ReferenceFileError(f"{source}: a table block needs a `columns` list")
    rows = block.get("rows")
    if isinstance(rows, dict):
        items = rows.items()
    else:  # one list per row at the block's top level
        items = ((k, v) for k, v in block.items() if k != "columns" and isinstance(v, list))
    numbers: Numbers = {}
    for row, values in items:
        if isinstance(values, dict):
            values = values.get("values")
        if not isinstance(values, list) or len(values) != len(columns):
            raise ReferenceFileError(
                f"{source}: row {row!r} has {len(values) if isinstance(values, list) else 'no'} values "
                f"for {len(columns)} columns"
            )
        for col, value in zip(columns, values, strict=True):
            number = _number(value)
            if number is not None:
                key = (str(col), str(row)) if transpose else (str(row), str(col))
                numbers[key] = number
    return numbers


def load_numbers(path: str | Path, source: str, transpose: bool = False) -> Numbers:
    block = find_block(load_reference_file(path), source, path)
    return block_numbers(block, f"{path}: {source}", transpose)
