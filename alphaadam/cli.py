"""The ``alphaadam`` command.

Each group of subcommands lives in its own module that exposes ``register(subparsers)``: it adds its
parsers and sets ``handler`` (a function of the parsed arguments returning an exit code) on each.
To add a group, append its module to ``COMMAND_GROUPS``. Groups import heavy libraries only inside
their handlers, so ``alphaadam --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from alphaadam.errors import UserError, error_line

COMMAND_GROUPS = ("alphaadam.sweep.cli", "alphaadam.report.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphaadam", description="AlphaAdam harness: sweeps, run status, paper tables and figures."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_GROUPS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe (`alphaadam status | head`) shows here, not at exit
        return code
    except UserError as exc:
        print(error_line(exc, f"alphaadam {args.command}: error"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Runs record their own interruption and resume from their checkpoints.
        print(
            f"\nalphaadam {args.command}: interrupted; run the same command again to resume", file=sys.stderr
        )
        return 130
    except BrokenPipeError:
        # The reader left (e.g. `| head`): nothing more to say, and no traceback at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
