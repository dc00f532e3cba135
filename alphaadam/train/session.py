"""The life of one training run, the same for every recipe; the recipe keeps its loop.

A recipe's ``train(cfg)`` opens a :class:`RunSession` and, between building its model and its
loop, enters :meth:`RunSession.running`::

    session = RunSession(cfg, settings, RECIPE, identity(settings), dist)
    if (previous := session.ended()) is not None:
        return previous                               # completed or diverged before: skipped
    ...data, model, optimizer, precision, tracker...
    with session.running(model, optimizer, precision, tracker, total_steps=..., ...):
        while session.step < total_steps:            # resumed at the checkpoint's step
            session.throughput.start()
            ...batches, accumulation, clipping...
            if reason := divergence(train_loss, max_loss):
                session.diverge(reason, {...}); break
            ...optimizer step...
            session.advance(tokens)
            session.end_step({...}, evaluated=...)   # metrics.jsonl, W&B, progress, checkpoint
        else:
            session.complete()
    return session.result

The session owns what is not training: the run directory (skip a finished run, take the lock,
``config.yaml`` and ``result.json``), resuming (model, optimizer, scaler, tracker, RNG, data
position, wall clock, W&B id; ``metrics.jsonl`` cut back to the checkpoint's step), the metrics line
(file, W&B, progress), atomic checkpoints (on the main process, or sharded with
``torch.distributed.checkpoint`` on every process of an FSDP2 run), and the end: completed, diverged,
oom (recorded and swallowed) or failed (recorded and raised), with the summary (step, metrics,
timing, memory). :func:`run_main` is every recipe's command line.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from alphaadam.errors import UserError, error_line
from alphaadam.runs.loggers import NoLogger, make_logger, wandb_run_id
from alphaadam.runs.recorder import RunRecorder, sigterm_as_interrupt
from alphaadam.runs.rundir import variant_hash
from alphaadam.train import distributed, sharded_checkpoint
from alphaadam.train.distributed import Distributed, broadcast
from alphaadam.train.measure import (
    Throughput,
    mask_stats_record,
    memory_record,
    peak_flops,
    peak_memory,
    reset_peak_memory,
)
from alphaadam.train.progress import Progress
from alphaadam.train.state import load_checkpoint, rng_state, save_checkpoint, set_rng_state


@contextlib.contextmanager
def started(device: str):
    """This process's part of a run (one process, or one of ``torchrun``'s) on its device, with
    SIGTERM raising KeyboardInterrupt as Ctrl-C does; torn down however the run ends."""
    dist = distributed.setup(device)
    try:
        with sigterm_as_interrupt():
            yield dist
    finally:
        distributed.teardown(dist)


class RunSession:
    """One run of one config, from the skip check to its end (see the module docstring).

    ``settings`` is the validated config: the session reads the keys every recipe has
    (:class:`~alphaadam.train.config.RunSettings`). ``identity`` is the recipe's ``identity()``;
    the session adds ``variant`` (:func:`~alphaadam.runs.rundir.variant_hash`).
    While running, ``step`` is the number of optimizer steps taken and ``tokens`` the tokens they
    saw; both are restored from the checkpoint when resuming.
    """

    def __init__(self, cfg: DictConfig, settings: DictConfig, recipe: str, identity: dict, dist: Distributed):
        self.cfg, self.settings, self.dist = cfg, settings, dist
        identity = {**identity, "variant": variant_hash(cfg)}  # configurations never merge in tables
        self.recorder = RunRecorder(cfg, recipe, identity, None, is_main=dist.is_main)
        self.dir = self.recorder.dir
        self.step = self.tokens = 0
        self.throughput = Throughput()  # the recipe times each step: throughput.start(), advance()
        self.logger = NoLogger()
        self.progress: Progress | None = None
        self.steps_per_epoch: int | None = None
        self._staged = None  # a sharded checkpoint staged for end_step to commit

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
            if self.dist.is_main:  # what a killed session logged after its checkpoint (all, without one)
                resumed = self.checkpoint_path.exists()
                self.recorder.metrics.truncate_after(self.step if resumed else -1)
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
            if not s.trainer.keep_checkpoint and self.dist.is_main:  # ended: it was only there to resume
                if self.checkpoint_path.is_dir():
                    shutil.rmtree(self.checkpoint_path)
                self.checkpoint_path.unlink(missing_ok=True)
            final = self.tracker.metrics()["final"]
            numbers = {k: v for k, v in final.items() if isinstance(v, (int, float))}
            self.logger.summary({"status": self.recorder.result.get("status"), **numbers})

    @property
    def checkpoint_path(self):
        """``checkpoint.pt``, or the ``checkpoint.dcp`` directory of a sharded (FSDP2) model."""
        if sharded_checkpoint.is_sharded(self.model):
            return self.dir / sharded_checkpoint.SHARDED_DIR
        return self.recorder.checkpoint_path

    def _resume(self) -> float:
        """Load the checkpoint into the model, optimizer, scaler, tracker and generators, and the
        step, tokens and W&B id into the session; returns the wall time the run had taken."""
        sharded = sharded_checkpoint.is_sharded(self.model)
        sharded_checkpoint.refuse_other_layout(self.recorder.checkpoint_path, sharded, self.dist)
        if sharded:  # the shards are loaded in place; the replicated parts come back
            checkpoint = sharded_checkpoint.load(self.checkpoint_path, self.model, self.optimizer, self.dist)
        else:
            checkpoint = load_checkpoint(self.checkpoint_path, self.dist.device)
        if checkpoint is None:
            return 0.0
        if "tokens" not in checkpoint:
            raise UserError(
                f"{self.checkpoint_path} was written by an older version of this recipe "
                "(no token count); delete it to start the run again"
            )
        if not sharded:
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

    def step_stats(self, lr: float, grad_norm: torch.Tensor) -> dict:
        """A logged step's training statistics: the mean training loss since the last one, the
        learning rate, the gradient norm before clipping, tokens/s and peak memory."""
        return dict(
            train_loss=self.tracker.take_train(),
            lr=lr,
            grad_norm=grad_norm.item(),
            tokens_per_s=self.throughput.window_rate(),
            peak_bytes=peak_memory(self.dist.device)["peak_bytes"],
        )

    def stage_checkpoint(self) -> None:
        """Take this step's checkpoint before the main process evaluates alone: a sharded model's
        processes write their shards now (in the save's collectives they could not wait out a 7B
        evaluation); :meth:`end_step` commits it with the evaluation's result, so a run killed
        during the evaluation resumes from the checkpoint before and evaluates again. Without
        shards, nothing to do: :meth:`end_step` saves as usual."""
        if sharded_checkpoint.is_sharded(self.model):
            self._staged = sharded_checkpoint.stage(
                self.checkpoint_path, self.model, self.optimizer, self.step, self.dist
            )

    def end_step(self, values: dict, evaluated: bool = False, checkpoint: bool = False) -> None:
        """The end of a step: alpha and mask density every ``trainer.mask_stats_every`` steps, the
        metrics line (when there is anything to log), the progress display, the summary in
        result.json after an evaluation, and a checkpoint when ``checkpoint``, every
        ``trainer.checkpoint_every`` steps, or when one was staged (:meth:`stage_checkpoint`)."""
        t = self.settings.trainer
        if t.mask_stats_every and self.step % t.mask_stats_every == 0:
            values = {**values, **mask_stats_record(self.optimizer)}
        self.progress.step(self.record(values) if values else None)
        if evaluated:
            self.update()
        if self._staged is not None:
            staged, self._staged = self._staged, None
            if self.dist.is_main:
                sharded_checkpoint.commit(staged, self.optimizer, self._replicated(), self.dist.world_size)
        elif checkpoint or (t.checkpoint_every and self.step % t.checkpoint_every == 0):
            self.save()

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
        """Checkpoint everything a resumed run needs to continue bit for bit (atomic): the main
        process writes ``checkpoint.pt``; a sharded (FSDP2) model's processes each write their
        shards into ``checkpoint.dcp`` with the main process's replicated parts beside them."""
        state = self._replicated()
        if sharded_checkpoint.is_sharded(self.model):
            sharded_checkpoint.save(self.checkpoint_path, self.model, self.optimizer, state, self.dist)
        elif self.dist.is_main:
            whole = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
            save_checkpoint(self.checkpoint_path, {**state, **whole})

    def _replicated(self) -> dict:
        """What a checkpoint holds besides the model and optimizer (the main process's is kept)."""
        return {
            "step": self.step,
            "tokens": self.tokens,
            "scaler": self.precision.scaler.state_dict(),
            "tracker": self.tracker.state_dict(),
            "rng": rng_state(self.dist.device),
            "data": {"sampler": self.sampler, "seed": self.settings.seed, "next_step": self.step},
            "elapsed_s": self.elapsed(),
            "wandb_id": self.wandb_id,
            "run_id": self.recorder.run_id,
        }

    # -- the end ------------------------------------------------------------------------------------

    def diverge(self, reason: str, values: dict) -> None:
        """End the run as diverged at the step being taken, logging its ``values``."""
        self.step += 1
        self.record(values)
        self.recorder.end("diverged", f"{reason} at step {self.step}", **self.summary())
        self.write(f"DIVERGED at step {self.step}: {reason}; status 'diverged' in {self.dir}")

    def complete(self) -> None:
        """End the run as completed, with a closing line: the tracker's main metric, final and best."""
        self.recorder.end("completed", None, **self.summary())
        if not self.dist.is_main:
            return
        r, main = self.recorder.result, self.tracker.main
        metrics, timing = r["metrics"], r["timing"]
        final, best = metrics["final"].get(main, math.nan), metrics["best"].get(main, math.nan)
        at = f"epoch {metrics.get('best_epoch')}" if self.steps_per_epoch else f"step {metrics['best_step']}"
        speed = f"{timing.get('tokens_per_s') or 0:,.0f} tokens/s"
        if timing.get("samples_per_s"):
            speed += f", {timing['samples_per_s']:,.0f} examples/s"
        self.write(
            f"completed {r['step']} steps: {main} {final:.4f} (best {best:.4f} at {at}), {speed}; "
            f"{self.dir}/result.json"
        )

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

    from alphaadam.paths import hydra_search

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

    config_dir, search = hydra_search(recipe)
    sys.argv.extend(search)
    hydra.main(version_base=None, config_path=str(config_dir), config_name=recipe)(main)()
