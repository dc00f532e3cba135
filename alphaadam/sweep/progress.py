"""One overall progress line for a sweep: jobs done of total, failures so far."""

from __future__ import annotations

import sys
import threading
import time


class SweepProgress:
    def __init__(self, total: int, stream=None):
        self.total, self.stream = total, stream or sys.stderr
        self.done = self.failed = self.running = self.elsewhere = 0
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.tty = self.stream.isatty()

    def _show(self, note: str = "") -> None:
        elapsed = time.monotonic() - self.start
        line = (
            f"[sweep] {self.done}/{self.total} done, {self.failed} failed, {self.running} running, "
            + (f"{self.elsewhere} run by another process, " if self.elsewhere else "")
            + f"{elapsed / 60:.1f} min{('  ' + note) if note else ''}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def started(self, name: str) -> None:
        with self.lock:
            self.running += 1
            self._show(f"started {name}")

    def finished(self, name: str, status: str) -> None:
        with self.lock:
            self.running -= 1
            self.done += 1
            self.failed += status not in ("completed", "diverged", "oom", "running")
            self.elsewhere += status == "running"  # lost the run's lock to another sweep: not a failure
            self._show(f"{name}: {status}")

    def skipped(self, name: str) -> None:
        """A job that another process took between planning and launch."""
        with self.lock:
            self.done += 1
            self.elsewhere += 1
            self._show(f"{name}: run by another process")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
