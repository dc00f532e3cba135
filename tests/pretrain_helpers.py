"""Shared set-up of the GPT pretraining tests: a composed config on the embedded corpus."""

from __future__ import annotations

from pathlib import Path

from alphaadam.train.config import compose

REPO = Path(__file__).resolve().parents[1]


# 20 quick steps: smaller than the tiny preset's (4 x 32 tokens per step instead of 8 x 64), for speed.
QUICK = (
    "trainer.max_steps=20",
    "trainer.eval_every=5",
    "trainer.eval_batches=2",
    "trainer.log_every=1",
    "trainer.progress=none",
    "model.block_size=32",
    "model.micro_batch_size=4",
)


def quick_args(root: Path, data_dir: Path, *overrides: str) -> list[str]:
    """Command-line overrides of a quick CPU run under ``root`` (later overrides win)."""
    return [f"run.root={root}", f"data.dir={data_dir}", *QUICK, *overrides]


def gpt_config(root: Path, data_dir: Path, *overrides: str):
    """The recipe's config for the same quick run, composed in-process."""
    return compose("pretrain_gpt", quick_args(root, data_dir, *overrides))
