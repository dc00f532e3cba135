"""``alphaadam collect | tables | figures``: the report subcommands (see alphaadam/cli.py)."""

from __future__ import annotations

import argparse

from alphaadam.paths import CONFIG_DIR

DEFAULT_RUNS = "results/runs"


def _spec_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "specs",
        nargs="*",
        metavar="SPEC",
        help="report spec names (configs/report/<name>.yaml) or paths; default: every spec of --suite",
    )
    parser.add_argument(
        "--suite", default="paper", help="spec suite to build when no SPEC is named (default: paper)"
    )
    parser.add_argument(
        "--spec-dir", default=str(CONFIG_DIR / "report"), help="where spec names are looked up"
    )
    parser.add_argument(
        "--runs",
        action="append",
        metavar="DIR",
        help="run root to scan for result.json (repeatable); default: each spec's runs.root",
    )
    parser.add_argument(
        "--out", metavar="DIR", help=f"where to write the {what}; default: each spec's outputs.dir"
    )


def _collect(args) -> int:
    from alphaadam.report.build import collect_index

    collect_index(args.runs or [DEFAULT_RUNS], args.out)
    return 0


def _tables(args) -> int:
    from alphaadam.report.build import write_tables

    write_tables(args.specs, suite=args.suite, spec_dir=args.spec_dir, roots=args.runs, out_dir=args.out)
    return 0


def _figures(args) -> int:
    from alphaadam.report.build import write_figures

    bench = None if args.no_bench else args.bench
    write_figures(
        args.specs, suite=args.suite, spec_dir=args.spec_dir, roots=args.runs, out_dir=args.out, bench=bench
    )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "collect",
        help="index every result.json into results/index/runs.csv and runs.parquet",
        description="Scan run roots for result.json and write one table (CSV and Parquet) of all runs.",
    )
    p.add_argument(
        "--runs", action="append", metavar="DIR", help=f"run root (repeatable; default {DEFAULT_RUNS})"
    )
    p.add_argument(
        "--out", default="results/index", metavar="DIR", help="index directory (default results/index)"
    )
    p.set_defaults(handler=_collect)

    p = subparsers.add_parser(
        "tables",
        help="paper-style tables (Markdown, LaTeX, cells CSV) from report specs",
        description="Build tables from report specs and the run results they select.",
    )
    _spec_arguments(p, "tables")
    p.set_defaults(handler=_tables)

    p = subparsers.add_parser(
        "figures",
        help="figures (PNG and PDF) from report specs",
        description="Make the figures that report specs ask for, and the optimizer benchmark figure.",
    )
    _spec_arguments(p, "figures")
    p.add_argument(
        "--bench",
        default="results/bench/optim_step.json",
        metavar="FILE",
        help="optimizer benchmark JSON to plot when it exists (default results/bench/optim_step.json)",
    )
    p.add_argument("--no-bench", action="store_true", help="do not make the benchmark figure")
    p.set_defaults(handler=_figures)
