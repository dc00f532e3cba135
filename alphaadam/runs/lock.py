"""run.lock: held by the process training a run, so others can tell a live run from a dead one."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from alphaadam.errors import UserError

LOCK_FILE = "run.lock"


class RunLocked(UserError):
    """Another live process holds the run's lock (the same run started twice)."""


class RunLock:
    """Exclusive ``flock`` on ``<run_dir>/run.lock``; the OS drops it when the process dies."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.path.read_text(errors="replace").strip() or "another process"
            raise RunLocked(
                f"run {self.path.parent} is being trained by {holder} (it holds {self.path}); "
                "wait for it to end or stop it, then run this again"
            ) from None
        # Who holds it, for the message another process gets; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_live(run_dir: Path) -> bool:
    """Whether some process holds the run's lock right now."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
