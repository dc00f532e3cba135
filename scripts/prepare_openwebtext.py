"""Prepare OpenWebText for recipes/pretrain_gpt.py: GPT-2 BPE token files, split as nanoGPT splits them.

    python scripts/prepare_openwebtext.py --out data/openwebtext [--num-proc 8]

Downloads Skylion007/openwebtext through Hugging Face datasets (about 54 GB in its cache), tokenizes it
with several processes and writes uint16 train.bin (~17 GB, ~9B tokens) and val.bin (~4M tokens) and
meta.json. Safe to re-run: a finished directory with the same settings is left alone (--force redoes it).
"""

from __future__ import annotations

import argparse
import os
import sys

from alphaadam.data.prepare import PrepareError, prepare_openwebtext
from alphaadam.errors import error_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/openwebtext", help="output directory (default: %(default)s)")
    parser.add_argument(
        "--num-proc",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="processes for downloading and tokenizing (default: half the CPUs, %(default)s)",
    )
    parser.add_argument("--val-size", type=float, default=0.0005, help="share of documents for validation")
    parser.add_argument(
        "--seed", type=int, default=2357, help="seed of the train/validation split (nanoGPT's)"
    )
    parser.add_argument("--revision", default=None, help="hub revision of the dataset (default: main)")
    parser.add_argument("--force", action="store_true", help="prepare again even if already prepared")
    args = parser.parse_args(argv)
    try:
        meta = prepare_openwebtext(
            args.out,
            num_proc=args.num_proc,
            val_size=args.val_size,
            seed=args.seed,
            revision=args.revision,
            force=args.force,
        )
    except PrepareError as err:
        print(error_line(err, "prepare_openwebtext"), file=sys.stderr)
        return 1
    print(f"{args.out}: {meta['train_tokens']:,} training and {meta['val_tokens']:,} validation tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
