"""Turn text into the token files that :mod:`alphaadam.data.tokens` reads.

Every writer tokenizes with GPT-2's BPE (``encode_ordinary``, then ``<|endoftext|>`` after each
document, as nanoGPT's OpenWebText preparation does), writes each split to a temporary file that is
renamed into place, and writes ``meta.json`` last: an interrupted preparation is simply redone, and a
finished one with the same settings is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from alphaadam.data.tokenizer import gpt2_encoding
from alphaadam.data.tokens import DTYPE, META_FILE, SPLITS, read_meta
from alphaadam.errors import UserError
from alphaadam.hub import cause
from alphaadam.runs.files import write_json

OPENWEBTEXT = "Skylion007/openwebtext"


class PrepareError(UserError, RuntimeError):
    """Preparation cannot proceed (no network, no input); the message says what to do."""


def already_prepared(out_dir: Path, settings: dict) -> bool:
    """True when ``out_dir`` holds both splits and a meta.json written with the same ``settings``."""
    meta = read_meta(out_dir)
    if meta is None or any(not (Path(out_dir) / f"{s}.bin").is_file() for s in SPLITS):
        return False
    return all(meta.get(k) == v for k, v in settings.items())


def encode_document(text: str) -> np.ndarray:
    enc = gpt2_encoding()
    ids = enc.encode_ordinary(text)
    ids.append(enc.eot_token)
    return np.asarray(ids, dtype=DTYPE)


def write_split(path: Path, chunks: Iterable[np.ndarray], total: int, desc: str = "") -> None:
    """Write ``total`` tokens, given as chunks, to ``path`` through a temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    out = np.memmap(tmp, dtype=DTYPE, mode="w+", shape=(max(total, 1),))
    pos = 0
    for chunk in tqdm(chunks, desc=desc or f"writing {path.name}", disable=not desc, unit="chunk"):
        out[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    if pos != total:
        raise RuntimeError(f"wrote {pos} tokens to {path}, expected {total}")
    out.flush()
    del out
    if total == 0:
        os.truncate(tmp, 0)
    os.replace(tmp, path)


def start(out_dir: Path) -> Path:
    """Make ``out_dir`` and drop a stale meta.json, so that a half-written directory never looks done."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    return out_dir


def finish(out_dir: Path, meta: dict) -> dict:
    counts = {
        f"{s}_tokens": (Path(out_dir) / f"{s}.bin").stat().st_size // np.dtype(DTYPE).itemsize for s in SPLITS
    }
    meta = {"tokenizer": "gpt2", "dtype": np.dtype(DTYPE).name, **meta, **counts}
    write_json(Path(out_dir) / META_FILE, meta)
    return meta


def write_documents(
    out_dir: Path,
    splits: dict[str, Sequence[np.ndarray]],
    meta: dict,
    *,
    compact_vocab: bool = False,
) -> dict:
    """Write tokenized documents per split. ``compact_vocab`` renumbers the ids that occur to 0..K-1
    and records the GPT-2 id of each in meta.json's ``token_ids``."""
    out_dir = start(out_dir)
    if compact_vocab:
        used = np.unique(np.concatenate([d for docs in splits.values() for d in docs]))
        lookup = np.zeros(int(used.max()) + 1, dtype=DTYPE)
        lookup[used] = np.arange(len(used), dtype=DTYPE)
        splits = {s: [lookup[d] for d in docs] for s, docs in splits.items()}
        meta = {**meta, "vocab_size": len(used), "token_ids": used.tolist()}
    else:
        meta = {**meta, "vocab_size": gpt2_encoding().n_vocab}
    for split, docs in splits.items():
        write_split(out_dir / f"{split}.bin", docs, sum(len(d) for d in docs))
    return finish(out_dir, meta)


def split_tail(docs: Sequence[np.ndarray], val_fraction: float) -> dict[str, list[np.ndarray]]:
    """The last ``val_fraction`` of each document's tokens (at least one window's worth) is validation."""
    train, val = [], []
    for d in docs:
        cut = len(d) - max(int(round(len(d) * val_fraction)), 1)
        train.append(d[:cut])
        val.append(d[cut:])
    return {"train": train, "val": val}


def prepare_text_files(
    files: Sequence[Path | str], out_dir: Path | str, *, val_fraction: float = 0.1, force: bool = False
) -> dict:
    """Token files from local UTF-8 text files (each file one document, its tail the validation split)."""
    files = [Path(f) for f in files]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise PrepareError(f"no such text file: {', '.join(missing)}" if missing else "no text files given")
    settings = {
        "source": "text files",
        "files": sorted(str(f.resolve()) for f in files),
        "val_fraction": val_fraction,
    }
    if not force and already_prepared(out_dir, settings):
        return read_meta(out_dir)
    docs = [encode_document(f.read_text(encoding="utf-8")) for f in files]
    return write_documents(Path(out_dir), split_tail(docs, val_fraction), settings)


def _tokenize_batch(batch: dict) -> dict:
    ids = [encode_document(text) for text in batch["text"]]
    return {"ids": ids, "len": [len(i) for i in ids]}


def prepare_dataset(
    dataset,
    out_dir: Path | str,
    meta: dict,
    *,
    num_proc: int = 1,
    shards: int = 1024,
    progress: bool = True,
) -> dict:
    """Token files from a ``datasets.DatasetDict`` with "train" and "val" splits of a "text" column,
    tokenized by ``num_proc`` processes and written shard by shard (memory stays small)."""
    out_dir = start(Path(out_dir))
    tokenized = dataset.map(
        _tokenize_batch,
        batched=True,
        remove_columns=dataset["train"].column_names,
        num_proc=num_proc if num_proc > 1 else None,
        desc="tokenizing",
    )
    for split in SPLITS:
        part = tokenized[split]
        n_shards = max(1, min(shards, len(part)))

        def chunks(part=part, n_shards=n_shards):
            for i in range(n_shards):
                shard = part.shard(num_shards=n_shards, index=i, contiguous=True).with_format("numpy")
                if len(shard):
                    yield np.concatenate(shard["ids"]).astype(DTYPE)

        total = int(np.sum(part["len"], dtype=np.uint64))
        write_split(
            out_dir / f"{split}.bin", chunks(), total, desc=f"writing {split}.bin" if progress else ""
        )
    return finish(out_dir, {**meta, "vocab_size": gpt2_encoding().n_vocab})


PARQUET_REVISION = "refs/convert/parquet"


def prepare_openwebtext(
    out_dir: Path | str,
    *,
    num_proc: int = max(1, (os.cpu_count() or 2) // 2),
    val_size: float = 0.0005,
    seed: int = 2357,
    revision: str | None = None,
    force: bool = False,
    load: Callable | None = None,
) -> dict:
    """OpenWebText (8M documents, ~9B tokens: train.bin ~17 GB) as nanoGPT splits it: a random
    ``val_size`` share of the documents (seed 2357) is validation.

    ``datasets`` >= 4 no longer runs loading scripts; while the hub repository still has one, the
    hub's parquet conversion (``revision="refs/convert/parquet"``) is used instead, with a warning.
    """
    settings = {"source": OPENWEBTEXT, "val_size": val_size, "seed": seed}
    if not force and already_prepared(out_dir, settings):
        return read_meta(out_dir)
    if load is None:
        from datasets import load_dataset as load

    def fail(err: Exception):
        return PrepareError(
            f"could not load {OPENWEBTEXT} (revision {revision or 'main'}) from the Hugging Face hub: "
            f"{cause(err)}\n"
            "It needs network access (about 54 GB are downloaded into the datasets cache) with "
            "HF_DATASETS_OFFLINE and HF_HUB_OFFLINE unset. Run this command on a machine with network "
            f"access, or copy a prepared {Path(out_dir)}/ (train.bin, val.bin, meta.json) here."
        )

    try:
        full = load(OPENWEBTEXT, split="train", num_proc=num_proc, revision=revision)
    except RuntimeError as err:
        if revision is not None or "scripts are no longer supported" not in str(err):
            raise fail(err) from err
        revision = PARQUET_REVISION
        print(
            f"{OPENWEBTEXT} still has a loading script, which datasets>=4 does not run; using the hub's "
            f"parquet conversion (revision {revision}). Check that meta.json reports ~9.0B training tokens.",
            flush=True,
        )
        try:
            full = load(OPENWEBTEXT, split="train", num_proc=num_proc, revision=revision)
        except Exception as err2:  # hub, network and cache errors come in many types
            raise fail(err2) from err2
    except Exception as err:  # hub, network and cache errors come in many types
        raise fail(err) from err
    parts = full.train_test_split(test_size=val_size, seed=seed, shuffle=True)
    from datasets import DatasetDict

    dataset = DatasetDict({"train": parts["train"], "val": parts["test"]})
    return prepare_dataset(dataset, out_dir, {**settings, "revision": revision}, num_proc=num_proc)
