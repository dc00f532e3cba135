"""GLUE tasks: their definitions, loading (hub or local files), tokenization and batches.

A task is described by its config file, ``configs/task/glue/<name>.yaml`` (see :class:`GlueTask`):
the ``nyu-mll/glue`` configuration it reads, its text columns (one sentence or a pair), its number of
labels (1 and ``regression: true`` for STS-B), the metrics recorded and the one that picks the best
evaluation, the splits, and the batch size.

Data come from the Hugging Face hub through ``datasets.load_dataset("nyu-mll/glue", <config>,
revision=<pinned commit>)``, or, with ``data.path=DIR``, from local files, looked up for each split
in ``DIR/<config>/`` and then ``DIR/``:

- ``<split>.parquet``, ``<split>.jsonl``, ``<split>.json`` (JSON lines), ``<split>.csv`` or
  ``<split>.tsv`` with a header row and the task's column names (``sentence1``, ``label``, ...);
- ``<split>-*.parquet``: the hub repository's own layout, so a clone of ``nyu-mll/glue`` works;
- or a ``datasets`` directory written by ``DatasetDict.save_to_disk`` (``dataset_dict.json``).

Texts are tokenized once, truncated to ``data.max_length`` tokens and not padded; a batch is padded
to its longest sequence (dynamic padding, rounded up to ``data.pad_to_multiple_of``). The training
order of an epoch is a permutation drawn from (seed, epoch) alone, so a resumed run needs no sampler
state: the step says where it is.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from alphaadam.errors import ConfigError, UserError
from alphaadam.evals.glue_metrics import CLASSIFICATION_METRICS, METRICS, REGRESSION_METRICS
from alphaadam.hub import cause, offline_flags

HUB_ID = "nyu-mll/glue"
# The hub repository's commit with the parquet files (nyu-mll/glue has no loading script since its
# conversion to parquet in January 2024); also configs/finetune_glue.yaml's data.revision.
REVISION = "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c"
LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".tsv")


class DataUnavailable(UserError, RuntimeError):
    """A GLUE task's data cannot be loaded (no network and no cache, or missing local files); the
    message says how to get it."""


@dataclass(frozen=True)
class GlueTask:
    name: str
    hub_config: str
    text_columns: tuple[str, ...]
    num_labels: int
    regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    batch_size: int
    label_column: str = "label"
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)

    @classmethod
    def from_config(cls, node) -> GlueTask:
        """The task a ``task`` config node describes; inconsistent settings raise ConfigError."""
        task = cls(
            name=str(node.name),
            hub_config=str(node.hub_config),
            text_columns=tuple(node.text_columns),
            num_labels=int(node.num_labels),
            regression=bool(node.regression),
            metrics=tuple(node.metrics),
            main_metric=str(node.main_metric),
            batch_size=int(node.batch_size),
            label_column=str(node.label_column),
            train_split=str(node.train_split),
            eval_splits=tuple(node.eval_splits),
        )
        task.check()
        return task

    def check(self) -> None:
        if len(self.text_columns) not in (1, 2):
            raise ConfigError(f"task.text_columns={list(self.text_columns)} must name one or two columns")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ConfigError(f"task.metrics: unknown {', '.join(unknown)}; known: {', '.join(METRICS)}")
        allowed = REGRESSION_METRICS if self.regression else CLASSIFICATION_METRICS
        wrong = [m for m in self.metrics if m not in allowed]
        if wrong:
            kind = "a regression" if self.regression else "a classification"
            raise ConfigError(f"task.metrics: {', '.join(wrong)} cannot score {kind} task")
        if self.main_metric not in self.metrics:
            raise ConfigError(f"task.main_metric={self.main_metric!r} is not in task.metrics")
        if self.regression and self.num_labels != 1:
            raise ConfigError("task.num_labels must be 1 for a regression task (task.regression=true)")
        if not self.regression and self.num_labels < 2:
            raise ConfigError(f"task.num_labels={self.num_labels} must be at least 2 for classification")
        if not self.eval_splits:
            raise ConfigError("task.eval_splits is empty")
        if "f1" in self.metrics and self.num_labels != 2:
            raise ConfigError("task.metrics: f1 (of the positive class) needs a binary task")

    def suffix(self, split: str) -> str:
        """Metric-name suffix of an evaluation split: none for the first (the one tables use), else
        ``_<split>`` without its ``validation_`` prefix (MNLI: ``accuracy_mismatched``)."""
        if split == self.eval_splits[0]:
            return ""
        return "_" + split.removeprefix("validation_")

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.train_split, *self.eval_splits)


# ---- loading ---------------------------------------------------------------------------------------


def _local_file(directory: Path, split: str) -> Path | None:
    for suffix in LOCAL_SUFFIXES:
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    shards = sorted(directory.glob(f"{split}-*.parquet"))
    return shards[0] if len(shards) == 1 else None


def _decoded(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 are an error naming the line they are on."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataUnavailable(
            f"{path}, line {line}: not UTF-8 text ({err.reason} at byte {err.start}); save the file as UTF-8"
        ) from None


def _json_lines(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(_decoded(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataUnavailable(f"{path}, line {number}: not a JSON object ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataUnavailable(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _read_local(path: Path, task: GlueTask):
    """The file as a Dataset, its rows checked first (errors name the file and line)."""
    import pandas as pd
    from datasets import Dataset

    if path.suffix == ".parquet":
        frame, where = pd.read_parquet(path), row_namer(path, "row", 0)
    elif path.suffix in (".jsonl", ".json"):
        frame, where = pd.DataFrame.from_records(_json_lines(path)), row_namer(path, "line", 1)
    else:
        text = io.StringIO(_decoded(path))
        frame = pd.read_csv(text, sep="\t" if path.suffix == ".tsv" else ",", keep_default_na=False)
        where = row_namer(path, "line", 2)  # after the header
    check_rows({c: list(frame[c]) for c in frame.columns}, task, where, path)
    return Dataset.from_pandas(frame, preserve_index=False)


def row_namer(source, unit: str, first: int):
    """``where(i)``: how an error names the i-th row of ``source`` (a file line, a split's row)."""
    return lambda i: f"{source}, {unit} {i + first}"


def _load_local(root: Path, task: GlueTask) -> dict:
    if not root.is_dir():
        raise DataUnavailable(f"data.path={root}: no such directory")
    for base in (root / task.hub_config, root):
        if (base / "dataset_dict.json").is_file():
            from datasets import load_from_disk

            saved = load_from_disk(str(base))
            missing = [s for s in task.splits if s not in saved]
            if missing:
                raise DataUnavailable(
                    f"{base} (save_to_disk) has no split {', '.join(missing)}; it has {', '.join(saved)}"
                )
            for split in task.splits:
                name = f"{base}, split {split!r}"
                check_rows(saved[split].to_dict(), task, row_namer(name, "row", 0), name)
            return {split: saved[split] for split in task.splits}
        files = {split: _local_file(base, split) for split in task.splits}
        if all(files.values()):
            return {split: _read_local(path, task) for split, path in files.items()}
    wanted = ", ".join(f"{s}.{{parquet,jsonl,csv,tsv}}" for s in task.splits)
    raise DataUnavailable(
        f"data.path={root}: no files for GLUE task {task.name!r}; expected {wanted} in "
        f"{root / task.hub_config} or {root} (or a DatasetDict saved there with save_to_disk)"
    )


def _load_hub(task: GlueTask, hub_id: str, revision: str | None) -> dict:
    from datasets import load_dataset

    try:
        loaded = load_dataset(hub_id, task.hub_config, revision=revision)
    except (OSError, ValueError) as err:  # no network and no cache, offline mode, unknown repo or config
        why = offline_flags(("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
        raise DataUnavailable(
            f"GLUE task {task.name!r}: {hub_id} (configuration {task.hub_config!r}, revision "
            f"{revision or 'main'}) is not in the datasets cache and the hub is unreachable{why}. "
            "Run once with network access to cache it (a few MB per task; HF_DATASETS_OFFLINE and "
            f"HF_HUB_OFFLINE unset), or set data.path=DIR with local files (docs/recipes/glue.md). "
            f"Cause: {cause(err)}"
        ) from None
    missing = [s for s in task.splits if s not in loaded]
    if missing:
        raise DataUnavailable(f"{hub_id}/{task.hub_config} has no split {', '.join(missing)}")
    for split in task.splits:  # hub data are clean; this names a task config's wrong column
        name = f"{hub_id}/{task.hub_config}, split {split!r}"
        check_rows(loaded[split].to_dict(), task, row_namer(name, "row", 0), name)
    return {s: loaded[s] for s in task.splits}


def load_splits(
    task: GlueTask,
    *,
    hub_id: str = HUB_ID,
    revision: str | None = REVISION,
    path: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> dict:
    """The task's training and evaluation splits as ``datasets.Dataset`` objects, by split name."""
    splits = _load_local(Path(path).expanduser(), task) if path else _load_hub(task, hub_id, revision)
    for split, data in splits.items():
        if len(data) == 0:
            raise DataUnavailable(f"GLUE task {task.name!r}, split {split!r} is empty")
        limit = max_train_samples if split == task.train_split else max_eval_samples
        if limit is not None and limit < len(data):
            splits[split] = data.select(range(limit))
    return splits


def _bad_label(value, task: GlueTask) -> str | None:
    """Why ``value`` cannot be a label of ``task`` (None when it can)."""
    if isinstance(value, str):  # CSV/TSV cells are text
        if not value.strip():
            return "the label is empty"
        try:
            value = float(value)
        except ValueError:
            return f"the label {value!r} is not a number"
    if value is None:
        return "the label is empty"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"the label {value!r} is not a number"
    if not math.isfinite(value):
        return f"the label is {value}"
    if task.regression:
        return None
    if value != int(value):
        return f"the label {value!r} is not a class index (a whole number)"
    if not 0 <= value < task.num_labels:
        return f"the label {value!r} is outside 0..{task.num_labels - 1} (task.num_labels={task.num_labels})"
    return None


def check_rows(data: dict[str, list], task: GlueTask, where, source) -> None:
    """Local data (columns by name) fit the task: its columns exist, every text is a string and
    every label fits, so that nothing is silently cast (a fractional label truncated, a null text
    read as "None", a NaN target ending a run as diverged). ``where(i)`` names row ``i``."""
    missing = [c for c in (*task.text_columns, task.label_column) if c not in data]
    if missing:
        raise DataUnavailable(
            f"{source}: no column {', '.join(missing)} for GLUE task {task.name!r} "
            f"(columns: {', '.join(data)})"
        )
    for column in task.text_columns:
        for i, text in enumerate(data[column]):
            if not isinstance(text, str):
                shown = "empty" if text is None or text != text else f"{text!r}, not text"
                raise DataUnavailable(f"{where(i)}: {column} is {shown}; every row needs its text")
    for i, label in enumerate(data[task.label_column]):
        why = _bad_label(label, task)
        if why:
            kind = "a number" if task.regression else f"a class index in 0..{task.num_labels - 1}"
            raise DataUnavailable(f"{where(i)}: {why}; {task.label_column} must be {kind}")


def load_configured(task: GlueTask, data) -> dict:
    """:func:`load_splits` with the settings of a recipe's ``data`` config node."""
    return load_splits(
        task,
        hub_id=data.hub_id,
        revision=data.revision,
        path=data.path,
        max_train_samples=data.max_train_samples,
        max_eval_samples=data.max_eval_samples,
    )


# ---- tokenization and batches ----------------------------------------------------------------------


def tokenize(splits: dict, tokenizer, task: GlueTask, max_length: int) -> dict:
    """Each split as token ids (``input_ids``, ``attention_mask``, maybe ``token_type_ids``) and
    ``labels``, truncated to ``max_length`` and unpadded."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 10**9 and max_length > limit:
        raise ConfigError(f"data.max_length={max_length} exceeds the tokenizer's model_max_length={limit}")
    columns, label = task.text_columns, task.label_column

    def encode(batch):  # load_splits has checked the texts and labels (check_rows)
        texts = [batch[c] for c in columns]
        encoded = dict(tokenizer(*texts, truncation=True, max_length=max_length))
        # float() first: CSV labels are text; check_rows has made sure a class index is whole.
        cast = float if task.regression else (lambda y: int(float(y)))
        encoded["labels"] = [cast(y) for y in batch[label]]
        return encoded

    out = {}
    for split, data in splits.items():
        out[split] = data.map(
            encode, batched=True, remove_columns=data.column_names, desc=f"tokenizing {task.name}/{split}"
        )
    return out


class Collator:
    """Pads rows (a dict of lists, as ``dataset[indices]`` returns them) into tensors: right padding
    to the longest row, rounded up to a multiple of ``pad_to_multiple_of``."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, regression: bool = False):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of or 1
        self.label_dtype = torch.float32 if regression else torch.long

    def __call__(self, rows: dict) -> dict[str, torch.Tensor]:
        ids = rows["input_ids"]
        length = max(len(r) for r in ids)
        length = math.ceil(length / self.multiple) * self.multiple
        batch = {}
        for key, fill in (("input_ids", self.pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
            if key not in rows:
                continue
            out = torch.full((len(ids), length), fill, dtype=torch.long)
            for i, row in enumerate(rows[key]):
                out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            batch[key] = out
        batch["labels"] = torch.as_tensor(rows["labels"], dtype=self.label_dtype)
        return batch


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of ``epoch``: a permutation of ``range(n)`` from (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=generator)


class TrainBatches:
    """Batches of ``batch_size`` examples, epoch after epoch, each epoch in its own order; the last
    batch of an epoch may be smaller (none are dropped). ``indices(step)`` is the batch that turns
    ``step`` completed steps into ``step + 1``."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = math.ceil(n / batch_size)
        self._epoch, self._order = None, None

    def indices(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size].tolist()


def micro_batches(indices: Sequence[int], micro_batch_size: int) -> list[list[int]]:
    """A batch split into consecutive micro-batches of at most ``micro_batch_size`` examples."""
    return [list(indices[i : i + micro_batch_size]) for i in range(0, len(indices), micro_batch_size)]


def eval_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches, longest sequences first (less padding; metrics do not depend on order)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
