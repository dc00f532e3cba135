"""Run jobs one after another on this machine, each in its own process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

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


def final_status(job: Job, exit_code: int) -> str:
    """The status its result.json records; ``failed`` when the process died without saying so."""
    status = job.status()
    if exit_code != 0 and status in ("pending", "interrupted"):
        return "failed"
    return status


def run_local(jobs: Sequence[Job], progress: SweepProgress | None = None) -> dict[str, str]:
    """Every job in turn, on CPU or on whatever devices the environment shows; returns name -> status."""
    progress = progress or SweepProgress(len(jobs))
    statuses = {}
    for job in jobs:
        progress.started(job.name)
        statuses[job.name] = final_status(job, start_job(job).wait())
        progress.finished(job.name, statuses[job.name])
    progress.close()
    return statuses
