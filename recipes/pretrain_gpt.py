"""Pretrain a nanoGPT-style GPT-2 with any registered optimizer (paper Figure 2 and Table 3).

    python recipes/pretrain_gpt.py                             # tiny model, embedded corpus: seconds on a CPU
    python recipes/pretrain_gpt.py optimizer=alphaadam optimizer.lr=3e-3 trainer.max_steps=500
    torchrun --standalone --nproc_per_node=8 recipes/pretrain_gpt.py experiment=paper/gpt2_pretrain \\
        model=gpt2_355m optimizer=alphaadam                    # the paper's runs (GPU, prepared OpenWebText)

Each run lives in its own directory, results/runs/<experiment>/<label>-<config hash>/, holding
config.yaml, metrics.jsonl, result.json and checkpoint.pt. Running the same command again skips a
completed (or diverged) run and resumes an unfinished one from its last checkpoint. Call
``train(cfg)`` to do the same from Python with a config from ``alphaadam.train.config.compose``.
"""

from __future__ import annotations

import math
import os
import sys
import time

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from alphaadam.data.embedded import ensure_embedded
from alphaadam.data.tokens import TokenData, TrainBatches, fixed_val_batches
from alphaadam.models.gpt import GPT, GPTConfig
from alphaadam.runs.loggers import NoLogger, make_logger, wandb_run_id
from alphaadam.runs.recorder import RunRecorder, sigterm_as_interrupt
from alphaadam.train import distributed
from alphaadam.train.config import ConfigError, build_optimizer_from_config, validate
from alphaadam.train.distributed import all_reduce_sum, broadcast
from alphaadam.train.divergence import divergence
from alphaadam.train.fused_update import fused_update_for_trainer
from alphaadam.train.measure import (
    Throughput,
    mask_stats_record,
    memory_record,
    peak_flops,
    peak_memory,
    reset_peak_memory,
)
from alphaadam.train.precision import make_precision
from alphaadam.train.preflight import STOPS
from alphaadam.train.progress import Progress
from alphaadam.train.schedule import LRSchedule
from alphaadam.train.state import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from alphaadam.train.track import LossTracker

RECIPE = "pretrain_gpt"


def identity(cfg: DictConfig) -> dict:
    """The fields of result.json that tables select runs by."""
    return {
        "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.get("lr"),
        "seed": cfg.seed,
        "model": cfg.model.name,
        "task": cfg.data.name,
        "steps": cfg.trainer.max_steps,
    }


def open_data(cfg: DictConfig, dist) -> TokenData:
    """The token files; the embedded corpus is built on first use (by rank 0, the others wait)."""
    if cfg.data.name == "embedded":
        if dist.is_main:
            ensure_embedded(cfg.data.dir)
        distributed.barrier(dist)
    return TokenData.open(cfg.data.dir, prepare_hint=cfg.data.prepare)


def model_config(cfg: DictConfig, data: TokenData) -> GPTConfig:
    m = cfg.model
    vocab_size = m.vocab_size if m.vocab_size is not None else math.ceil(data.vocab_size / 64) * 64
    if vocab_size < data.vocab_size:
        raise ConfigError(
            f"model.vocab_size={vocab_size} is smaller than the data's vocabulary ({data.vocab_size})"
        )
    fields = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")
    try:
        return GPTConfig(vocab_size=vocab_size, **{k: m[k] for k in fields})
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def accumulation_steps(cfg: DictConfig, world_size: int) -> int:
    """Micro-batches per process per step, so that a step sees ``trainer.tokens_per_step`` tokens."""
    t = cfg.trainer
    per_micro_step = t.micro_batch_size * cfg.model.block_size * world_size
    if t.tokens_per_step is None:
        return 1
    if t.tokens_per_step % per_micro_step:
        raise ConfigError(
            f"trainer.tokens_per_step={t.tokens_per_step} is not a multiple of micro_batch_size x "
            f"block_size x processes = {t.micro_batch_size} x {cfg.model.block_size} x {world_size} "
            f"= {per_micro_step}"
        )
    return t.tokens_per_step // per_micro_step


def evaluation_points(cfg: DictConfig) -> dict[int, float | None]:
    """Steps with an evaluation: every ``eval_every``, the ``eval_at_fractions`` of training, the last."""
    t = cfg.trainer
    points: dict[int, float | None] = {}
    if t.eval_every > 0:
        points.update({s: None for s in range(t.eval_every, t.max_steps + 1, t.eval_every)})
    points.update({max(1, round(f * t.max_steps)): f for f in t.eval_at_fractions})
    points.setdefault(t.max_steps, None)  # the final validation loss, always
    return points


@torch.no_grad()
def evaluate(model, batches, precision, dist) -> float:
    """Mean loss over the fixed validation batches (shared out among the processes)."""
    model.eval()
    total = torch.zeros(2, device=dist.device)
    for x, y in batches[dist.rank :: dist.world_size]:
        with precision.autocast():
            _, loss = model(x, y)
        total += torch.stack([loss.float(), torch.ones((), device=dist.device)])
    model.train()
    total = all_reduce_sum(total, dist)
    return (total[0] / total[1]).item()


def to_device(batch, device):
    if device.type == "cuda":
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in batch)
    return batch


def train(cfg: DictConfig) -> dict | None:
    """Run, resume or skip the run that ``cfg`` describes; returns its result.json record."""
    settings = validate(cfg)  # a misspelt key or a wrong type stops here, named
    dist = distributed.setup(settings.trainer.device)
    try:
        with sigterm_as_interrupt():
            return _train(cfg, settings, dist)
    finally:
        distributed.teardown(dist)


def _train(cfg: DictConfig, s: DictConfig, dist) -> dict | None:
    t = s.trainer
    say = print if dist.is_main else (lambda *args, **kwargs: None)

    # -- the run directory: an ended run is skipped ---------------------------------------------------
    recorder = RunRecorder(cfg, RECIPE, identity(s), t.max_steps, is_main=dist.is_main)
    if broadcast(recorder.finished, dist):
        say(f"already {recorder.previous['status']}, skipping: {recorder.dir} (delete it to run again)")
        return recorder.previous

    # -- data: random training windows by (seed, step), a fixed validation set ----------------------
    data = open_data(s, dist)
    accum = accumulation_steps(s, dist.world_size)
    block, micro_batch = s.model.block_size, t.micro_batch_size
    tokens_per_step = dist.world_size * accum * micro_batch * block
    train_batches = TrainBatches(data, micro_batch, block, s.seed)
    val_batches = [
        to_device(b, dist.device) for b in fixed_val_batches(data, t.eval_batches, micro_batch, block)
    ]

    # -- model, optimizer, schedule, precision (the same initial weights on every rank) -------------
    seed_everything(s.seed)
    model = GPT(model_config(s, data)).to(dist.device)
    optimizer = build_optimizer_from_config(model, s.optimizer)  # bad hyper-parameters stop here, named
    schedule = LRSchedule.from_config(s.scheduler, t.max_steps)
    precision = make_precision(t.dtype, dist.device)
    fused = fused_update_for_trainer(optimizer, t, accum, dist.enabled, precision.name)  # AdaLomo in backward
    if dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tracker, throughput = LossTracker(), Throughput()
    eval_points = evaluation_points(s)
    peak = t.peak_flops or peak_flops(dist.device, precision.name)
    wandb_id = wandb_run_id(s.experiment, recorder.dir)

    with recorder.recording():
        # -- resume from the last checkpoint: weights, optimizer, scaler, RNG, losses, data position --
        step, elapsed_before = 0, 0.0
        checkpoint = load_checkpoint(recorder.checkpoint_path, dist.device)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            precision.scaler.load_state_dict(checkpoint["scaler"])
            tracker.load_state_dict(checkpoint["tracker"])
            set_rng_state(checkpoint["rng"], dist.device)
            step, elapsed_before = checkpoint["step"], checkpoint["elapsed_s"]
            wandb_id = checkpoint["wandb_id"]
            del checkpoint
        if dist.is_main:
            recorder.metrics.truncate_after(step)  # drop what a killed session logged after it
        recorder.begin(step, metrics=tracker.metrics())
        session_start = time.perf_counter()

        compiled = torch.compile(model) if t.compile else model  # evaluation runs on each rank alone
        train_model = compiled
        if dist.enabled:
            device_ids = [dist.local_rank] if dist.device.type == "cuda" else None
            train_model = DistributedDataParallel(compiled, device_ids=device_ids)
        logger = NoLogger()
        if dist.is_main:
            config = OmegaConf.to_container(cfg, resolve=True)
            logger = make_logger(s.logger, recorder.dir, s.run.label, config, wandb_id)
        recorder.on_exit(logger.finish)
        progress = Progress(t.max_steps, step, t.progress, enabled=dist.is_main)
        recorder.on_exit(lambda status: progress.close())
        say(
            f"{recorder.dir}\n{s.model.name} ({model.num_params() / 1e6:.2f}M parameters), "
            f"{s.optimizer.name} lr {s.optimizer.lr:g}, {t.max_steps} steps of {tokens_per_step:,} tokens "
            f"({dist.world_size} x {accum} x {micro_batch} x {block}), {dist.device} {precision.name}"
            + (f", resuming at step {step}" if step else "")
        )

        def elapsed() -> float:
            return elapsed_before + time.perf_counter() - session_start

        def record(values: dict) -> dict:
            """One line of metrics.jsonl (and of W&B)."""
            line = {"step": step, "tokens": step * tokens_per_step, "time_s": round(elapsed(), 3), **values}
            if dist.is_main:
                recorder.metrics.append(line)
                logger.log(line)
            return line

        def summary() -> dict:
            """result.json's step, metrics, timing and memory."""
            speed = throughput.summary(model.flops_per_token(), dist.world_size, peak)
            if speed:
                speed["samples_per_s"] = speed["tokens_per_s"] / block
            return dict(
                step=step,
                tokens=step * tokens_per_step,
                metrics=tracker.metrics(),
                timing={**recorder.result.get("timing", {}), "wall_s": elapsed(), **speed},
                memory=memory_record(dist.device, optimizer, model.num_params()),
            )

        def save() -> None:
            if dist.is_main:
                state = {
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": precision.scaler.state_dict(),
                    "tracker": tracker.state_dict(),
                    "rng": rng_state(dist.device),
                    "data": {"sampler": "TrainBatches", "seed": s.seed, "next_step": step},
                    "elapsed_s": elapsed(),
                    "wandb_id": wandb_id,
                    "run_id": recorder.run_id,
                }
                save_checkpoint(recorder.checkpoint_path, state)

        # -- the training loop -------------------------------------------------------------------------
        reset_peak_memory(dist.device)
        if step == 0:
            tracker.add_val(0, evaluate(compiled, val_batches, precision, dist))
            record({"val_loss": tracker.final["val_loss"]})
        while step < t.max_steps:
            lr = schedule.apply(optimizer, step)
            throughput.start()
            loss_sum = torch.zeros((), device=dist.device)
            for micro in range(accum):
                x, y = to_device(train_batches.get(step, dist.rank * accum + micro), dist.device)
                if dist.enabled:  # all-reduce the gradients after the last micro-batch only
                    train_model.require_backward_grad_sync = micro == accum - 1
                with precision.autocast():
                    _, loss = train_model(x, y)
                loss_sum += loss.detach()
                if fused:  # each gradient is consumed (and freed) as backward produces it
                    grad_norm = fused.backward(loss)
                    continue
                precision.scaler.scale(loss / accum).backward()
            if not fused:
                grad_norm = precision.unscale_and_clip(model, optimizer, t.grad_clip)  # the true gradients
            train_loss = (all_reduce_sum(loss_sum / accum, dist) / dist.world_size).item()
            if reason := divergence(train_loss, t.max_loss):
                step += 1
                record({"train_loss": train_loss, "lr": lr})
                recorder.end("diverged", f"{reason} at step {step}", **summary())
                progress.write(f"DIVERGED at step {step}: {reason}; status 'diverged' in {recorder.dir}")
                break
            precision.scaler.step(optimizer)  # masked optimizers overwrite p.grad: norms come first
            precision.scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            throughput.stop(tokens_per_step)
            tracker.add_train(train_loss)

            # -- this step's record: training stats, evaluation, alpha and mask density ---------------
            values = {}
            if step % t.log_every == 0 or step in eval_points:
                values.update(
                    train_loss=tracker.take_train(),
                    lr=lr,
                    grad_norm=grad_norm.item(),
                    tokens_per_s=throughput.window_rate(),
                    peak_bytes=peak_memory(dist.device)["peak_bytes"],
                )
            if step in eval_points:
                values["val_loss"] = evaluate(compiled, val_batches, precision, dist)
                tracker.add_val(step, values["val_loss"], eval_points[step])
            if t.mask_stats_every and step % t.mask_stats_every == 0:
                values.update(mask_stats_record(optimizer))
            progress.step(record(values) if values else None)
            if "val_loss" in values:
                recorder.update(**summary())
            if step == t.max_steps or (t.checkpoint_every and step % t.checkpoint_every == 0):
                save()
        else:
            recorder.end("completed", None, **summary())
            if dist.is_main:
                progress.write(completion_line(recorder))
        logger.summary({"status": recorder.result.get("status"), **tracker.metrics()["final"]})
    return recorder.result or None


def completion_line(recorder: RunRecorder) -> str:
    r = recorder.result
    final, best = r["metrics"]["final"], r["metrics"]["best"]
    return (
        f"completed {r['step']} steps: val loss {final.get('val_loss', float('nan')):.4f} "
        f"(best {best.get('val_loss', float('nan')):.4f} at step {r['metrics']['best_step']}), "
        f"{r['timing'].get('tokens_per_s') or 0:,.0f} tokens/s; {recorder.dir}/result.json"
    )


@hydra.main(version_base=None, config_path="../configs", config_name="pretrain_gpt")
def main(cfg: DictConfig) -> None:
    main_process = os.environ.get("RANK", "0") == "0"
    try:
        train(cfg)
    except STOPS as err:  # a config, device or data problem: one clear line, no traceback
        if main_process:
            print(f"pretrain_gpt: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if main_process:
            print("pretrain_gpt: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
