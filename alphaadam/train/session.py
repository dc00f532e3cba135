"""The life of one training run, the same for every recipe; the recipe keeps its loop.

A recipe's ``train(cfg)`` opens a :class:`RunSession` and, between building its model and its
loop, enters :meth:`RunSession.running`::

    session = RunSession(cfg, settings, RECIPE, identity(settings), dist)
    if (previous := session.ended()) is not None:
        return previous                               # completed or diverged before: skipped
    ...data, model, optimizer, precision, tracker...
    with session.running(model, optimizer, precision, tracker, total_steps=..., flops_per_token=...):
        while session.step < total_steps:            # resumed at the checkpoint's step
            session.throughput.start()
            ...batches, accumulation, clipping...
            if reason := divergence(train_loss, max_loss):
                session.diverge(reason, {...}); break
            ...optimizer step...
            session.advance(tokens)
            session.log({...})                       # metrics.jsonl, W&B, progress
            session.save()                           # when the recipe checkpoints
        else:
            session.complete(completion_line)
    return session.result

The session owns what is not training: the run directory (skip a finished run, take the lock,
``config.yaml`` and ``result.json``), resuming (model, optimizer, scaler, tracker, RNG, data
position, wall clock, W&B id; ``metrics.jsonl`` cut back to the checkpoint's step), the metrics line
(file, W&B, progress), atomic checkpoints on the main process, and the end: completed, diverged,
oom (recorded and swallowed) or failed (recorded and raised), with the summary (step, metrics,
timing, memory). :func:`run_main` is every recipe's command line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from alphaadam.errors import UserError, error_line
from alphaadam.runs.loggers import NoLogger, make_logger, wandb_run_id
from alphaadam.runs.recorder import RunRecorder
from alphaadam.train.distributed import Distributed, broadcast
from alphaadam.train.measure import Throughput, memory_record, peak_flops, reset_peak_memory
from alphaadam.train.progress import Progress
from alphaadam.train.state import load_checkpoint, rng_state, save_checkpoint, set_rng_state


class RunSession:
    """One run of one config, from the skip check to its end (see the module docstring).

    ``settings`` is the validated config; the session reads its ``experiment``, ``seed``,
    ``logger``, ``run.label`` and ``trainer`` (``progress``, ``peak_flops``, ``keep_checkpoint``).
    While running, ``step`` is the number of optimizer steps taken and ``tokens`` the tokens they
    saw; both are restored from the checkpoint when resuming.
    """

    def __init__(self, cfg: DictConfig, settings: DictConfig, recipe: str, identity: dict, dist: Distributed):
        self.cfg, self.settings, self.dist = cfg, settings, dist
        self.recorder = RunRecorder(cfg, recipe, identity, None, is_main=dist.is_main)
        self.dir = self.recorder.dir
        self.step = self.tokens = 0
        self.throughput = Throughput()  # the recipe times each step: throughput.start(), advance()
        self.logger = NoLogger()
        self.progress: Progress | None = None
        self.steps_per_epoch: int | None = None

    # -- before the run -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """Print on the main process only."""
        if self.dist.is_main:
            print(message, flush=True)

    def ended(self) -> dict | None:
        """result.json of a run that already ended as completed or diverged (running it again
        would end the same way), after saying it is skipped; None when the run is to be run."""
        if not broadcast(self.recorder.finished, self.dist):
            return None
        previous = self.recorder.previous
        self.say(f"already {previous['status']}, skipping: {self.dir} (delete it to run again)")
        return previous

    # -- the run ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def running(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        precision,
        tracker,
        *,
        total_steps: int,
        flops_per_token: float,
        sampler: str,
        steps_per_epoch: int | None = None,
    ):
        """Take the lock, resume from the checkpoint if there is one, start logging and progress;
        on leaving, record how the run ended. ``sampler`` names the data order in checkpoints
        (the order is a function of the seed and the step); ``steps_per_epoch`` adds ``epoch`` to
        the metrics lines and the summary."""
        self.model, self.optimizer, self.precision, self.tracker = model, optimizer, precision, tracker
        self.total_steps, self.flops_per_token, self.sampler = total_steps, flops_per_token, sampler
        self.steps_per_epoch = steps_per_epoch
        self.recorder.total_steps = total_steps
        device, s = self.dist.device, self.settings
        self.wandb_id = wandb_run_id(s.experiment, self.dir)
        self.peak_flops = s.trainer.peak_flops or peak_flops(device, precision.name)
        with self.recorder.recording():
            elapsed_before = self._resume()
            if self.dist.is_main:
                self.recorder.metrics.truncate_after(self.step)  # what a killed session logged after it
            self.recorder.begin(self.step, metrics=tracker.metrics())
            self._started = time.perf_counter() - elapsed_before
            if self.dist.is_main:
                config = OmegaConf.to_container(self.cfg, resolve=True)
                self.logger = make_logger(s.logger, self.dir, s.run.label, config, self.wandb_id)
            self.recorder.on_exit(self.logger.finish)
            self.progress = Progress(total_steps, self.step, s.trainer.progress, enabled=self.dist.is_main)
            self.recorder.on_exit(lambda status: self.progress.close())
            reset_peak_memory(device)
            yield self
            if not s.trainer.get("keep_checkpoint", True):  # ended: the checkpoint was only there to resume
                self.recorder.checkpoint_path.unlink(missing_ok=True)
            final = self.tracker.metrics()["final"]
            numbers = {k: v for k, v in final.items() if isinstance(v, (int, float))}
            self.logger.summary({"status": self.recorder.result.get("status"), **numbers})

    def _resume(self) -> float:
        """Load the checkpoint into the model, optimizer, scaler, tracker and generators, and the
        step, tokens and W&B id into the session; returns the wall time the run had taken."""
        checkpoint = load_checkpoint(self.recorder.checkpoint_path, self.dist.device)
        if checkpoint is None:
            return 0.0
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.precision.scaler.load_state_dict(checkpoint["scaler"])
        self.tracker.load_state_dict(checkpoint["tracker"])
        set_rng_state(checkpoint["rng"], self.dist.device)
        self.step, self.tokens = checkpoint["step"], checkpoint["tokens"]
        self.wandb_id = checkpoint["wandb_id"]
        return checkpoint["elapsed_s"]

    def announce(self, description: str) -> None:
        """Print the run directory and what runs (and from which step, when resuming)."""
        self.say(f"{self.dir}\n{description}" + (f", resuming at step {self.step}" if self.step else ""))

    def elapsed(self) -> float:
        """Wall time of the run, over every session that worked on it."""
        return time.perf_counter() - self._started

    def epoch(self, step: int) -> float:
        return round(step / self.steps_per_epoch, 4)

    def advance(self, tokens: int, samples: int = 0) -> None:
        """End a training step of ``tokens`` tokens (``samples`` examples): count and time it."""
        self.step += 1
        self.tokens += tokens
        self.throughput.stop(tokens, samples)

    def record(self, values: dict) -> dict:
        """One line of metrics.jsonl (and of W&B): the step, epoch, tokens and time, then ``values``."""
        line = {"step": self.step}
        if self.steps_per_epoch:
            line["epoch"] = self.epoch(self.step)
        line.update(tokens=self.tokens, time_s=round(self.elapsed(), 3), **values)
        if self.dist.is_main:
            self.recorder.metrics.append(line)
            self.logger.log(line)
        return line

    def log(self, values: dict) -> None:
        """The end of a step: its metrics line when there are ``values``, and the progress display."""
        self.progress.step(self.record(values) if values else None)

    def write(self, message: str) -> None:
        """A line among the progress display's (main process only)."""
        self.progress.write(message)

    def summary(self) -> dict:
        """result.json's step, tokens, epoch, metrics, timing and memory."""
        speed = self.throughput.summary(self.flops_per_token, self.dist.world_size, self.peak_flops)
        metrics = self.tracker.metrics()
        fields = dict(step=self.step, tokens=self.tokens)
        if self.steps_per_epoch:
            fields["epoch"] = self.epoch(self.step)
            if self.tracker.best_step is not None:
                metrics["best_epoch"] = self.epoch(self.tracker.best_step)
        n_params = sum(p.numel() for p in self.model.parameters())
        return dict(
            **fields,
            metrics=metrics,
            timing={**self.recorder.result.get("timing", {}), "wall_s": self.elapsed(), **speed},
            memory=memory_record(self.dist.device, self.optimizer, n_params),
        )

    def update(self) -> None:
        """Write the summary so far into result.json (after an evaluation)."""
        self.recorder.update(**self.summary())

    def save(self) -> None:
        """Checkpoint everything a resumed run needs to continue bit for bit (atomic, main process)."""
        if not self.dist.is_main:
            return
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "tracker": self.tracker.state_dict(),
            "rng": rng_state(self.dist.device),
            "data": {"sampler": self.sampler, "seed": self.settings.seed, "next_step": self.step},
            "elapsed_s": self.elapsed(),
            "wandb_id": self.wandb_id,
            "run_id": self.recorder.run_id,
        }
        save_checkpoint(self.recorder.checkpoint_path, state)

    # -- the end ------------------------------------------------------------------------------------

    def diverge(self, reason: str, values: dict) -> None:
        """End the run as diverged at the step being taken, logging its ``values``."""
        self.step += 1
        self.record(values)
        self.recorder.end("diverged", f"{reason} at step {self.step}", **self.summary())
        self.write(f"DIVERGED at step {self.step}: {reason}; status 'diverged' in {self.dir}")

    def complete(self, describe: Callable[[dict], str]) -> None:
        """End the run as completed and print ``describe(result)``, the recipe's closing line."""
        self.recorder.end("completed", None, **self.summary())
        if self.dist.is_main:
            self.write(f"{describe(self.recorder.result)}; {self.dir}/result.json")

    @property
    def result(self) -> dict | None:
        """result.json as this session left it (None on the processes that do not write it)."""
        return self.recorder.result or None


def run_main(train: Callable[[DictConfig], object], recipe: str) -> None:
    """The command line of a recipe: Hydra composes ``configs/<recipe>.yaml`` with the arguments and
    ``train(cfg)`` runs it. A stop-error (:class:`~alphaadam.errors.UserError`: config, device, data,
    model) prints one line and exits 2; an interrupt (Ctrl-C, SIGTERM) exits 130; a diverged or
    out-of-memory run, recorded as such, exits 0 so that a sweep carries on; any other error keeps
    its traceback (exit 1)."""
    import hydra

    from alphaadam.paths import CONFIG_DIR

    main_process = os.environ.get("RANK", "0") == "0"

    def main(cfg: DictConfig) -> None:
        try:
            train(cfg)
        except UserError as err:
            if main_process:
                print(error_line(err, recipe), file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            if main_process:
                print(f"{recipe}: interrupted; run the same command again to resume", file=sys.stderr)
            sys.exit(130)

    hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name=recipe)(main)()
