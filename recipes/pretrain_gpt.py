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
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from omegaconf import MISSING, DictConfig
from torch.nn.parallel import DistributedDataParallel

from alphaadam.data.embedded import ensure_embedded
from alphaadam.data.tokens import TokenData, TrainBatches, fixed_val_batches, is_prepared
from alphaadam.errors import ConfigError
from alphaadam.models.gpt import GPT, GPTConfig
from alphaadam.train import distributed
from alphaadam.train.config import (
    AT_LEAST_0,
    AT_LEAST_1,
    POSITIVE,
    PROBABILITY,
    Range,
    RunSettings,
    TrainerSettings,
    build_optimizer_from_config,
    validate,
)
from alphaadam.train.distributed import all_reduce_sum, device_summary, resolve_device
from alphaadam.train.divergence import divergence
from alphaadam.train.identity import run_identity
from alphaadam.train.precision import make_precision
from alphaadam.train.schedule import LRSchedule
from alphaadam.train.session import RunSession, run_main, started
from alphaadam.train.state import seed_everything
from alphaadam.train.track import LossTracker

RECIPE = "pretrain_gpt"


# -- the config schema (configs/pretrain_gpt.yaml and its groups are validated against it) ----------


@dataclass
class ModelConfig:
    name: str = MISSING
    n_layer: int = MISSING
    n_head: int = MISSING
    n_embd: int = MISSING
    block_size: int = 1024
    vocab_size: int | None = 50304  # None: the data's vocabulary rounded up to a multiple of 64
    dropout: float = 0.0
    bias: bool = False
    lr: float = MISSING  # the learning rate the paper uses for this size (Table 5)
    micro_batch_size: int = MISSING  # the per-device batch size the paper uses for this size


@dataclass
class DataConfig:
    name: str = MISSING  # "embedded" (built on first use) or a prepared token directory's name
    dir: str = MISSING
    prepare: str = ""  # the command that prepares ``dir``, printed when it is missing


@dataclass
class TrainerConfig(TrainerSettings):
    max_steps: int = MISSING  # optimizer steps
    tokens_per_step: int | None = None  # None: one micro-batch per process, no accumulation
    micro_batch_size: int = MISSING
    eval_every: int = 0  # 0: only at eval_at_fractions (and step 0)
    eval_batches: int = 20  # micro-batches in the fixed validation set
    eval_at_fractions: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 1.0])


@dataclass
class PretrainGPTConfig(RunSettings):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    RANGES: ClassVar[dict] = {
        "trainer.max_steps": AT_LEAST_1,
        "trainer.tokens_per_step": AT_LEAST_1,
        "trainer.micro_batch_size": AT_LEAST_1,
        "trainer.eval_batches": AT_LEAST_1,
        "trainer.eval_every": AT_LEAST_0,
        "trainer.eval_at_fractions": Range(0, 1, open_low=True),
        "model.block_size": AT_LEAST_1,
        "model.n_layer": AT_LEAST_1,
        "model.n_head": AT_LEAST_1,
        "model.n_embd": AT_LEAST_1,
        "model.vocab_size": AT_LEAST_1,
        "model.dropout": PROBABILITY,
        "model.lr": POSITIVE,
        "model.micro_batch_size": AT_LEAST_1,
    }


SCHEMA = PretrainGPTConfig


def identity(s: DictConfig) -> dict:
    """The fields of result.json that tables select runs by."""
    return run_identity(s, model=s.model.name, task=s.data.name, steps=s.trainer.max_steps)


def preflight(s: DictConfig, resources: bool, checked: set) -> str:
    """The device and the prepared data (the embedded corpus is built on first use, so it always is)."""
    if not resources:
        return f"config ok: {s.model.name} / {s.optimizer.name}"
    device = resolve_device(s.trainer.device)
    if s.data.name != "embedded" and not is_prepared(s.data.dir):
        TokenData.open(s.data.dir, prepare_hint=s.data.prepare)  # raises DataMissing, with the hint
    return f"ready: {s.model.name} / {s.optimizer.name} on {device_summary(device)}, data in {s.data.dir}"


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
    settings = validate(cfg, SCHEMA)  # a misspelt key or a wrong type stops here, named
    with started(settings.trainer.device) as dist:
        return _train(cfg, settings, dist)


def _train(cfg: DictConfig, s: DictConfig, dist) -> dict | None:
    t = s.trainer
    session = RunSession(cfg, s, RECIPE, identity(s), dist)
    if (previous := session.ended()) is not None:
        return previous

    # -- data: random training windows by (seed, step), a fixed validation set ----------------------
    data = open_data(s, dist)
    accum = accumulation_steps(s, dist.world_size)
    block, micro_batch = s.model.block_size, t.micro_batch_size
    samples_per_step = dist.world_size * accum * micro_batch
    tokens_per_step = samples_per_step * block
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
    tracker = LossTracker()
    eval_points = evaluation_points(s)

    with session.running(
        model,
        optimizer,
        precision,
        tracker,
        total_steps=t.max_steps,
        flops_per_token=model.flops_per_token(),
        sampler="TrainBatches",
    ):  # resumed: weights, optimizer, scaler, RNG, losses, data position (session.step)
        compiled = torch.compile(model) if t.compile else model  # evaluation runs on each rank alone
        train_model = compiled
        if dist.enabled:
            device_ids = [dist.local_rank] if dist.device.type == "cuda" else None
            train_model = DistributedDataParallel(compiled, device_ids=device_ids)
        session.announce(
            f"{s.model.name} ({model.num_params() / 1e6:.2f}M parameters), "
            f"{s.optimizer.name} lr {s.optimizer.lr:g}, {t.max_steps} steps of {tokens_per_step:,} tokens "
            f"({dist.world_size} x {accum} x {micro_batch} x {block}), {dist.device} {precision.name}"
        )

        # -- the training loop -------------------------------------------------------------------------
        if session.step == 0:
            tracker.add_val(0, evaluate(compiled, val_batches, precision, dist))
            session.record({"val_loss": tracker.final["val_loss"]})
        while session.step < t.max_steps:
            step = session.step
            lr = schedule.apply(optimizer, step)
            session.throughput.start()
            loss_sum = torch.zeros((), device=dist.device)
            for micro in range(accum):
                x, y = to_device(train_batches.get(step, dist.rank * accum + micro), dist.device)
                if dist.enabled:  # all-reduce the gradients after the last micro-batch only
                    train_model.require_backward_grad_sync = micro == accum - 1
                with precision.autocast():
                    _, loss = train_model(x, y)
                loss_sum += loss.detach()
                precision.scaler.scale(loss / accum).backward()
            grad_norm = precision.unscale_and_clip(model, optimizer, t.grad_clip)  # the true gradients
            train_loss = (all_reduce_sum(loss_sum / accum, dist) / dist.world_size).item()
            if reason := divergence(train_loss, t.max_loss):
                session.diverge(reason, {"train_loss": train_loss, "lr": lr})
                break
            precision.scaler.step(optimizer)  # masked optimizers overwrite p.grad: norms come first
            precision.scaler.update()
            optimizer.zero_grad(set_to_none=True)
            session.advance(tokens_per_step, samples_per_step)
            tracker.add_train(train_loss)
            step = session.step

            # -- this step's record: training stats, evaluation, alpha and mask density ---------------
            values = {}
            if step % t.log_every == 0 or step in eval_points:
                values.update(session.step_stats(lr, grad_norm))
            if step in eval_points:
                values["val_loss"] = evaluate(compiled, val_batches, precision, dist)
                tracker.add_val(step, values["val_loss"], eval_points[step])
            session.end_step(values, evaluated=step in eval_points, checkpoint=step == t.max_steps)
        else:
            session.complete()
    return session.result


if __name__ == "__main__":
    run_main(train, RECIPE)
