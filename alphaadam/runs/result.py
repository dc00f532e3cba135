"""result.json: the record of one run that sweeps, status tables and reports read.

Schema (version 1); recipes fill what applies to them:

    schema        1
    status        "running" | "completed" | "failed" | "oom" | "diverged"
    recipe        e.g. "pretrain_gpt", "finetune_glue"
    experiment    experiment name (sweeps group runs by it)
    run_id        the run directory's hash of the identity config (see rundir.py)
    identity      flat dict of the fields tables select on: optimizer, lr, seed, task, model, ...
    step, total_steps, tokens
    metrics       {"final": {...}, "best": {...}, "at_fraction": {"0.2": {...}, ...}, "best_step": int}
    timing        {"wall_s", "step_time_s", "tokens_per_s", "samples_per_s", "mfu"}
    memory        {"peak_bytes", "optimizer_state_bytes", "optimizer_state_bytes_per_param"}
    versions      {"python", "torch", "alphaadam", ...}
    git_sha       commit of the code that ran (None outside a git checkout)
    started_at, updated_at   ISO-8601 UTC
    error         one line saying why, for failed / oom / diverged

Reports (alphaadam/report) read these by name: `at_fraction` keys are fractions of total_steps
written as decimals ("0.2", "1.0"); metric names in `final` / `best` (val_loss, train_loss,
accuracy, f1, matthews, pearson, spearman, ...) are what configs/report/*.yaml refer to, as
``metrics.final.<name>``; GLUE/GSM8K scores are fractions in [0, 1] (tables scale them).
"""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from alphaadam.errors import UserError
from alphaadam.runs.files import write_json

SCHEMA = 1
RESULT_FILE = "result.json"
STATUSES = ("running", "completed", "failed", "oom", "diverged")
FINAL_STATUSES = ("completed", "oom", "diverged")  # outcomes a sweep records and moves on from


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions(
    packages=("torch", "transformers", "datasets", "hydra-core", "bitsandbytes", "galore-torch"),
) -> dict:
    found = {"python": platform.python_version()}
    for name in ("alphaadam", *packages):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# Fields that hold an object (flattened with dots by the report index).
NESTED_FIELDS = ("identity", "metrics", "timing", "memory", "versions")


class ResultFileError(UserError):
    """A result.json that is not valid JSON or does not follow the result schema."""


def load_result(path: str | Path) -> dict:
    """Parse and check one result.json; any problem raises ResultFileError naming the file."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(result, dict):
        raise ResultFileError(f"{path}: expected a JSON object, got {type(result).__name__}")
    schema = result.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise ResultFileError(f"{path}: result schema {schema!r} is not supported (expected {SCHEMA})")
    if result.get("status") not in STATUSES:
        raise ResultFileError(f"{path}: status {result.get('status')!r} is not one of {', '.join(STATUSES)}")
    for key in NESTED_FIELDS:
        if result.get(key) is not None and not isinstance(result[key], dict):
            raise ResultFileError(f"{path}: {key!r} must be an object, got {type(result[key]).__name__}")
    return result


def read_result(run_dir: Path) -> dict | None:
    """The run's checked result.json, or None when it has none (ResultFileError when unreadable)."""
    path = Path(run_dir) / RESULT_FILE
    return load_result(path) if path.exists() else None


def write_result(run_dir: Path, result: dict) -> dict:
    """Validate and atomically write ``result`` (stamping ``updated_at``); returns it."""
    status = result.get("status")
    if status not in STATUSES:
        raise ValueError(f"result status {status!r} is not one of {STATUSES}")
    result = {**result, "schema": SCHEMA, "updated_at": now()}
    write_json(Path(run_dir) / RESULT_FILE, result)
    return result


def new_result(recipe: str, experiment: str, run_id: str, identity: dict, total_steps: int | None) -> dict:
    return {
        "schema": SCHEMA,
        "status": "running",
        "recipe": recipe,
        "experiment": experiment,
        "run_id": run_id,
        "identity": identity,
        "step": 0,
        "total_steps": total_steps,
        "metrics": {},
        "timing": {},
        "memory": {},
        "versions": versions(),
        "git_sha": git_sha(),
        "started_at": now(),
        "error": None,
    }
