"""A single-node GPU pool: each job leases the GPUs it needs and runs as a child process.

A lease is an exclusive ``flock`` on ``<lock_dir>/device-<id>.lock``, taken by the pool and handed to
the job's process (the pool then drops its copy), so the GPU stays leased exactly as long as the job
runs: a crashed job releases it, a killed sweep does not steal it from a job still running, and two
sweeps started on the same node share the GPUs without clashing. Jobs see their GPUs through
``CUDA_VISIBLE_DEVICES``; a job of several GPUs runs under ``torchrun --standalone``.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from alphaadam.sweep.job import Job
from alphaadam.sweep.local import final_status, start_job, taken_elsewhere
from alphaadam.sweep.progress import SweepProgress

POLL_S = 0.2


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"alphaadam-gpu-leases-{os.getuid()}"


class DeviceLeases:
    def __init__(self, devices: Sequence[str], lock_dir: Path | None = None):
        if not devices:
            raise ValueError("the GPU pool needs at least one device id (e.g. devices=[0,1,2,3])")
        self.devices = [str(d) for d in devices]
        self.lock_dir = Path(lock_dir or default_lock_dir())
        self.lock_dir.mkdir(parents=True, exist_ok=True)

    def try_lease(self, count: int) -> list[tuple[str, int]] | None:
        """``count`` free devices as (id, locked fd) pairs, or None (nothing held) if fewer are free."""
        held = []
        for device in self.devices:
            fd = os.open(self.lock_dir / f"device-{device}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append((device, fd))
            if len(held) == count:
                return held
        for _, fd in held:
            os.close(fd)
        return None


def run_pool(
    jobs: Sequence[Job],
    devices: Sequence[str],
    lock_dir: Path | None = None,
    progress: SweepProgress | None = None,
) -> dict[str, str]:
    """Run ``jobs`` concurrently on ``devices``, first fit in order; returns name -> status."""
    leases = DeviceLeases(devices, lock_dir)
    progress = progress or SweepProgress(len(jobs))
    pending, running, statuses = list(jobs), {}, {}
    for job in pending:
        if job.gpus > len(leases.devices):
            raise ValueError(f"job {job.name} needs {job.gpus} GPUs but the pool has {len(leases.devices)}")
    while pending or running:
        for job in list(pending):
            if taken_elsewhere(job):
                pending.remove(job)
                statuses[job.name] = "running"
                progress.skipped(job.name)
                continue
            lease = leases.try_lease(max(job.gpus, 1))
            if lease is None:
                continue
            ids, fds = zip(*lease, strict=True)
            env = {"CUDA_VISIBLE_DEVICES": ",".join(ids)}
            try:
                running[job] = start_job(job, env=env, processes=max(job.gpus, 1), pass_fds=fds)
            finally:
                for fd in fds:  # the child holds the lease from here on
                    os.close(fd)
            pending.remove(job)
            progress.started(f"{job.name} on GPU {','.join(ids)}")
        for job, proc in list(running.items()):
            code = proc.poll()
            if code is not None:
                del running[job]
                statuses[job.name] = final_status(job, code)
                progress.finished(job.name, statuses[job.name])
        time.sleep(POLL_S)
    progress.close()
    return statuses
