"""``alphaadam sweep | status``: plan, launch and follow a study (see alphaadam/cli.py).

    alphaadam sweep experiment=NAME [launcher=local|inline|gpu_pool|slurm] [launcher.KEY=VALUE]
                    [sweep.KEY=VALUE] [OVERRIDE ...] [--dry-run] [--only-failed]
    alphaadam status experiment=NAME [sweep.KEY=VALUE] [OVERRIDE ...]

``experiment`` names the sweep spec ``configs/sweep/<NAME>.yaml``; ``sweep.KEY=VALUE`` replaces a key
of it (e.g. ``sweep.seeds=[0,1]``); ``launcher.KEY=VALUE`` a key of ``configs/launcher/<name>.yaml``;
every other ``KEY=VALUE`` is a Hydra override given to every job (e.g. ``trainer.max_steps=100``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from alphaadam.errors import UserError
from alphaadam.paths import CONFIG_DIR, RECIPES_DIR

LAUNCHERS = ("local", "inline", "gpu_pool", "slurm")


def parse_tokens(tokens: list[str]) -> dict:
    parsed = {
        "experiment": None,
        "launcher": None,
        "launcher_updates": {},
        "spec_updates": {},
        "overrides": [],
    }
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise UserError(f"expected KEY=VALUE, got {token!r}")
        if key in ("experiment", "launcher"):
            parsed[key] = value
        elif key.startswith("sweep."):
            parsed["spec_updates"][key[len("sweep.") :]] = yaml.safe_load(value)
        elif key.startswith("launcher."):
            parsed["launcher_updates"][key[len("launcher.") :]] = yaml.safe_load(value)
        else:
            parsed["overrides"].append(token)
    if not parsed["experiment"]:
        raise UserError("name the study: experiment=<name> (a file in configs/sweep/)")
    return parsed


def load_launcher(config_dir: Path, name: str, updates: dict) -> dict:
    if name not in LAUNCHERS:
        raise UserError(f"launcher={name!r} is not one of {', '.join(LAUNCHERS)}")
    path = Path(config_dir) / "launcher" / f"{name}.yaml"
    options = yaml.safe_load(path.read_text()) if path.exists() else {"name": name}
    unknown = sorted(set(updates) - set(options))
    if unknown:
        raise UserError(
            f"launcher {name} has no option {', '.join(unknown)}; it has {', '.join(sorted(options))}"
        )
    return {**options, **updates}


def plan_study(args) -> tuple:
    from alphaadam.sweep.plan import plan, skipped_optimizers
    from alphaadam.sweep.spec import load_spec

    parsed = parse_tokens(args.tokens)
    config_dir = Path(args.config_dir)
    if not config_dir.is_dir():
        raise UserError(f"no config directory {config_dir}: pass --config-dir a folder shaped like configs/")
    try:
        spec = load_spec(config_dir, parsed["experiment"], parsed["spec_updates"])
        jobs = plan(spec, config_dir, Path(args.recipes_dir), parsed["overrides"])
    except ValueError as err:
        raise UserError(str(err)) from None
    for name, reason in skipped_optimizers(spec, config_dir).items():
        print(f"skipped: {name} ({reason}); its jobs are left out")
    return parsed, spec, jobs


def job_table(jobs, statuses: list[str]) -> str:
    rows = [("status", "optimizer", "task", "lr", "seed", "run")]
    for job, status in zip(jobs, statuses, strict=True):
        t = job.tags
        lr = "recipe's" if t["lr"] is None else f"{t['lr']:g}"
        run = f"unreadable: {job.result_path}" if status == "unreadable" else job.name
        rows.append((status, t["optimizer"], t["task"] or "-", lr, str(t["seed"]), run))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def visible_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    ids = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ids.split(",") if ids else [str(i) for i in range(torch.cuda.device_count())]


def launch(jobs, spec, launcher: dict, args) -> dict[str, str]:
    from alphaadam.sweep.progress import SweepProgress

    name = launcher["name"]
    if name == "slurm":
        from alphaadam.sweep.slurm import submit, write_array_scripts

        out_dir = Path(launcher["out_dir"]) / spec.name
        scripts = write_array_scripts(
            jobs,
            out_dir,
            name=f"alphaadam-{spec.name.replace('/', '-')}",
            root=Path.cwd(),
            time=launcher["time"],
            cpus_per_gpu=launcher["cpus_per_gpu"],
            max_parallel=launcher["max_parallel"],
            directives=launcher["directives"],
        )
        print("\n".join(f"wrote {s}" for s in scripts))
        if launcher["submit"]:
            print("\n".join(submit(scripts)))
        else:
            print("submit with: " + "; ".join(f"sbatch {s}" for s in scripts))
        return {}
    if spec.gpus_per_job > 0 and not visible_gpus():
        raise UserError(
            f"study {spec.name!r} needs {spec.gpus_per_job} GPU(s) per job but this machine shows none: "
            "run it on a GPU node, use launcher=slurm, or add --dry-run to see the plan"
        )
    progress = SweepProgress(len(jobs))
    if name == "gpu_pool":
        from alphaadam.sweep.pool import run_pool

        devices = visible_gpus() if launcher["devices"] == "auto" else [str(d) for d in launcher["devices"]]
        lock_dir = Path(launcher["lock_dir"]) if launcher["lock_dir"] else None
        return run_pool(jobs, devices, lock_dir, progress)
    if name == "inline":
        from alphaadam.sweep.inline import run_inline

        return run_inline(jobs, Path(args.config_dir), spec.recipe, progress)
    from alphaadam.sweep.local import run_local

    return run_local(jobs, progress)


def _sweep(args) -> int:
    from alphaadam.sweep.plan import select, summary

    parsed, spec, jobs = plan_study(args)
    todo = select(jobs, args.only_failed)
    print(f"study {spec.name} ({spec.recipe}): {summary(jobs)}; {len(todo)} to run")
    for job in jobs:
        if job.status() == "unreadable":
            print(f"unreadable: {job.result_path} (restore it, or delete its run directory to rerun it)")
    if args.dry_run:
        print(job_table(jobs, [job.status() for job in jobs]))
        return 0
    if not todo:
        return 0
    default = "gpu_pool" if spec.gpus_per_job > 0 else "local"
    launcher = load_launcher(Path(args.config_dir), parsed["launcher"] or default, parsed["launcher_updates"])
    statuses = launch(todo, spec, launcher, args)
    failed = sorted(n for n, s in statuses.items() if s == "failed")
    if failed:
        print(
            f"{len(failed)} failed (logs in <run>/launcher.log; rerun with --only-failed): "
            + ", ".join(failed)
        )
    return 1 if failed else 0


def _status(args) -> int:
    from alphaadam.sweep.plan import status_counts

    _, spec, jobs = plan_study(args)
    statuses = [job.status() for job in jobs]
    print(f"study {spec.name}: {status_counts(statuses)}")
    print(job_table(jobs, statuses))
    return 0


def _common(parser) -> None:
    parser.add_argument(
        "tokens", nargs="*", metavar="KEY=VALUE", help="experiment=NAME, sweep.*, launcher.*, overrides"
    )
    parser.add_argument(
        "--config-dir",
        default=str(CONFIG_DIR),
        help="Hydra config directory (default: the repository's configs/)",
    )
    parser.add_argument(
        "--recipes-dir", default=str(RECIPES_DIR), help="recipe modules (default: the repository's recipes/)"
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="plan and run a study: each optimizer's LR grid x tasks x seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan and every job's status; run nothing"
    )
    p.add_argument("--only-failed", action="store_true", help="rerun only the failed jobs")
    p.set_defaults(handler=_sweep)
    p = subparsers.add_parser("status", help="done / running / failed / diverged / oom / pending of a study")
    _common(p)
    p.set_defaults(handler=_status)
