"""Prepare your own text files for recipes/pretrain_gpt.py (data=text): GPT-2 BPE token files.

    python scripts/prepare_text.py notes.txt book.txt --out data/text
    python recipes/pretrain_gpt.py data=text

Each file is one document; the last --val-fraction of each is the validation split. Safe to re-run:
the same files and settings leave a finished directory alone (--force redoes it).
"""

from __future__ import annotations

import argparse
import sys

from alphaadam.data.prepare import PrepareError, prepare_text_files
from alphaadam.errors import error_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="UTF-8 text files")
    parser.add_argument("--out", default="data/text", help="output directory (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="tail of each file for validation")
    parser.add_argument("--force", action="store_true", help="prepare again even if already prepared")
    args = parser.parse_args(argv)
    try:
        meta = prepare_text_files(args.files, args.out, val_fraction=args.val_fraction, force=args.force)
    except PrepareError as err:
        print(error_line(err, "prepare_text"), file=sys.stderr)
        return 1
    print(f"{args.out}: {meta['train_tokens']:,} training and {meta['val_tokens']:,} validation tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
