"""Token files and the batches drawn from them.

A prepared data directory holds ``train.bin`` and ``val.bin`` (uint16 token ids, one stream per
split, documents separated by ``<|endoftext|>``) and ``meta.json``, written last, which marks the
directory complete. ``meta.json`` may carry ``token_ids``: the GPT-2 ids of a compact vocabulary
(position = id in the files), which the embedded corpus uses so that a tiny model's output layer is
small.

Training batches are a pure function of (seed, step, micro-batch index): resuming at a step needs
no sampler state, and the batches of a step do not depend on the number of processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alphaadam.errors import UserError

META_FILE = "meta.json"
SPLITS = ("train", "val")
DTYPE = np.uint16


class DataMissing(UserError, RuntimeError):
    """A data directory is not prepared; the message names the command that prepares it."""


def read_meta(data_dir: Path) -> dict | None:
    path = Path(data_dir) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_prepared(data_dir: Path) -> bool:
    data_dir = Path(data_dir)
    return read_meta(data_dir) is not None and all((data_dir / f"{s}.bin").is_file() for s in SPLITS)


@dataclass
class TokenData:
    """The two splits of a prepared directory, read through memory maps."""

    dir: Path
    meta: dict = field(default_factory=dict)

    @classmethod
    def open(cls, data_dir: Path | str, prepare_hint: str = "") -> TokenData:
        data_dir = Path(data_dir)
        if not is_prepared(data_dir):
            hint = f"; prepare it with: {prepare_hint}" if prepare_hint else ""
            raise DataMissing(
                f"no prepared token data in {data_dir} (train.bin, val.bin and meta.json){hint}"
            )
        return cls(data_dir, read_meta(data_dir))

    @property
    def vocab_size(self) -> int:
        """Number of token ids the files use (ids are < this)."""
        return int(self.meta["vocab_size"])

    def split(self, name: str) -> np.memmap:
        # A fresh memmap per call: numpy keeps touched pages of a long-lived one (nanoGPT does the same).
        return np.memmap(self.dir / f"{name}.bin", dtype=DTYPE, mode="r")

    def num_tokens(self, name: str) -> int:
        return (self.dir / f"{name}.bin").stat().st_size // np.dtype(DTYPE).itemsize


def _windows(tokens: np.ndarray, starts, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([tokens[s : s + block_size + 1] for s in starts]).astype(np.int64)
    rows = torch.from_numpy(rows)
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


class TrainBatches:
    """Random windows of ``block_size + 1`` tokens; batch ``j`` of ``step`` is seeded by (seed, step, j)."""

    def __init__(self, data: TokenData, batch_size: int, block_size: int, seed: int):
        self.data, self.batch_size, self.block_size, self.seed = data, batch_size, block_size, seed
        n = data.num_tokens("train")
        if n <= block_size + 1:
            raise ValueError(
                f"{data.dir}/train.bin has {n} tokens, fewer than block_size + 1 = {block_size + 1}"
            )

    def get(self, step: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, (batch_size, block_size) int64 on the CPU."""
        tokens = self.data.split("train")
        rng = np.random.default_rng([self.seed, step, index])
        starts = rng.integers(0, len(tokens) - self.block_size, size=self.batch_size)
        return _windows(tokens, starts, self.block_size)


def fixed_val_batches(
    data: TokenData, num_batches: int, batch_size: int, block_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A validation set that every run shares: windows evenly spaced over ``val.bin``, the same for
    every seed and optimizer (and overlapping only when the split is too short for them all)."""
    tokens = np.asarray(data.split("val"))
    last = len(tokens) - block_size - 1
    if last < 0:
        raise ValueError(f"{data.dir}/val.bin has {len(tokens)} tokens, fewer than block_size + 1")
    starts = np.linspace(0, last, num_batches * batch_size).round().astype(np.int64)
    return [
        _windows(tokens, starts[i : i + batch_size], block_size) for i in range(0, len(starts), batch_size)
    ]
