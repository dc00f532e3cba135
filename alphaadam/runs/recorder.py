"""The life of one run directory: skip, resume, record, and how the run ended.

A recipe opens a :class:`RunRecorder` for its composed config; the recorder finds the directory
(:func:`run_dir_for`), says whether the run already ended (``completed`` or ``diverged``: both
would end the same way again, so they are skipped), writes ``config.yaml`` and keeps ``result.json``
current. ``recording()`` turns the way the training ends into the run's status:

- returns normally: the recipe has called :meth:`end` (``completed`` or ``diverged``);
- ``torch.OutOfMemoryError``: status ``oom``, swallowed, so that a sweep carries on (exit code 0);
- ``KeyboardInterrupt`` (also SIGTERM, see :func:`sigterm_as_interrupt`): the status stays
  ``running`` with an "interrupted" note, re-raised; as after a kill, the released ``run.lock``
  tells a sweep the run is interrupted, and the same command resumes from the last checkpoint;
- any other exception: status ``failed`` with its first line, re-raised (non-zero exit code).

Only the main process (rank 0) writes, and it holds ``run.lock`` while recording, so a second
process given the same run stops at once instead of writing into it.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from alphaadam.errors import error_line
from alphaadam.runs.files import remove_stale_temporaries, write_text
from alphaadam.runs.lock import RunLock
from alphaadam.runs.metrics import MetricsLog
from alphaadam.runs.result import ResultFileError, new_result, read_result, write_result
from alphaadam.runs.rundir import CHECKPOINT_FILE, CONFIG_FILE, config_hash, run_dir_for

SKIPPED_STATUSES = ("completed", "diverged")


class RunRecorder:
    def __init__(self, cfg: DictConfig, recipe: str, identity: dict, total_steps: int, is_main: bool = True):
        self.cfg, self.recipe, self.identity, self.total_steps = cfg, recipe, identity, total_steps
        self.is_main = is_main
        self.dir = run_dir_for(cfg)
        self.run_id = config_hash(cfg)
        self.metrics = MetricsLog(self.dir)
        try:
            self.previous = read_result(self.dir)
        except ResultFileError as err:
            raise ResultFileError(f"{err}; restore it, or delete {self.dir} to run it again") from None
        self.result: dict = {}
        self._on_exit: list = []

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / CHECKPOINT_FILE

    @property
    def finished(self) -> bool:
        """The run already ended in a way that running it again would repeat."""
        return bool(self.previous) and self.previous.get("status") in SKIPPED_STATUSES

    def _new_result(self, step: int) -> dict:
        result = new_result(
            self.recipe, self.cfg.get("experiment", "default"), self.run_id, self.identity, self.total_steps
        )
        if step > 0 and self.previous:  # resuming: keep when the run started and how fast it went
            result.update({k: self.previous[k] for k in ("started_at", "timing") if k in self.previous})
        return {**result, "step": step}

    def begin(self, step: int, **fields) -> None:
        """Mark the run as running from ``step`` (0, or the checkpoint's step when resuming);
        ``fields`` (e.g. the checkpoint's metrics) go into result.json as they are."""
        if not self.is_main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.dir / CONFIG_FILE, OmegaConf.to_yaml(self.cfg, resolve=True))
        self.result = write_result(self.dir, {**self._new_result(step), **fields})

    def update(self, **fields) -> None:
        if self.is_main and self.result:
            self.result = write_result(self.dir, {**self.result, **fields})

    def end(self, status: str, error: str | None = None, **fields) -> None:
        if self.is_main and not self.result:  # it ended before it began (e.g. an unreadable checkpoint)
            step = self.previous.get("step", 0) if self.previous else 0
            self.result = write_result(self.dir, self._new_result(step))
        self.update(status=status, error=error, **fields)

    def on_exit(self, callback) -> None:
        """Call ``callback(status)`` when ``recording()`` ends, however it ends (e.g. to finish W&B)."""
        self._on_exit.append(callback)

    @contextlib.contextmanager
    def recording(self):
        """Map the way the body ends to the run's status (see the module docstring)."""
        status = "failed"
        lock = RunLock(self.dir).acquire() if self.is_main else None
        try:
            if self.is_main:
                remove_stale_temporaries(self.dir)
            yield self
            status = self.result.get("status", "completed") if self.result else "completed"
        except torch.OutOfMemoryError as err:
            status = "oom"
            self.end("oom", error_line(err))
            if self.is_main:
                print(f"run ended: out of memory ({error_line(err)}); status oom in {self.dir}", flush=True)
        except KeyboardInterrupt:
            self.update(error="interrupted (KeyboardInterrupt or SIGTERM); run the same command to resume")
            raise
        except BaseException as err:
            self.end("failed", error_line(err))
            raise
        finally:
            for callback in reversed(self._on_exit):
                callback(status)
            if lock is not None:
                lock.release()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Treat SIGTERM (``kill``, SLURM pre-emption) like Ctrl-C while the body runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
