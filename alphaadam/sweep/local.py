"""Run jobs one after another on this machine, each in its own process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from alphaadam.runs.lock import is_live
from alphaadam.runs.result import new_result, write_result
from alphaadam.sweep.job import Job
from alphaadam.sweep.progress import SweepProgress

LOG_FILE = "launcher.log"


def start_job(
    job: Job, env: dict | None = None, processes: int = 1, pass_fds: Sequence[int] = ()
) -> subprocess.Popen:
    """Start one job with its output going to ``<run_dir>/launcher.log``."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with open(job.run_dir / LOG_FILE, "ab") as log:
        return subprocess.Popen(
            job.argv(processes),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            pass_fds=tuple(pass_fds),
        )


def last_line(path: Path) -> str:
    """The last non-blank line of a log (the error, when a process failed), or "" without one."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    hint = "Set the environment variable HYDRA_FULL_ERROR"  # Hydra's footer after the error
    return next((ln.strip() for ln in reversed(lines) if ln.strip() and not ln.startswith(hint)), "")


def final_status(job: Job, exit_code: int) -> str:
    """The status its result.json records; ``failed`` when the process died without saying so.

    A job that failed before writing any result.json (e.g. it could not start) gets one saying
    ``failed`` with its log's last line, so that ``alphaadam status`` and ``--only-failed`` see it.
    """
    status = job.status()
    if exit_code == 0 or status not in ("pending", "interrupted"):
        return status
    if status == "pending":
        error = last_line(job.run_dir / LOG_FILE) or f"exited with code {exit_code}"
        result = new_result(Path(job.script).stem, None, None, dict(job.tags), None)
        write_result(job.run_dir, {**result, "status": "failed", "error": f"did not start: {error}"})
    return "failed"


def taken_elsewhere(job: Job) -> bool:
    """Whether another process (e.g. a second sweep of the same study) is training the run now."""
    return is_live(job.run_dir)


def run_local(jobs: Sequence[Job], progress: SweepProgress | None = None) -> dict[str, str]:
    """Every job in turn, on CPU or on whatever devices the environment shows; returns name -> status."""
    progress = progress or SweepProgress(len(jobs))
    statuses = {}
    for job in jobs:
        if taken_elsewhere(job):
            statuses[job.name] = "running"
            progress.skipped(job.name)
            continue
        progress.started(job.name)
        statuses[job.name] = final_status(job, start_job(job).wait())
        progress.finished(job.name, statuses[job.name])
    progress.close()
    return statuses
