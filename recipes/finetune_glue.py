"""Fine-tune RoBERTa-base on a GLUE task with any registered optimizer (paper Table 1).

    python recipes/finetune_glue.py task=glue/rte optimizer=alphaadam optimizer.lr=3e-5
    python recipes/finetune_glue.py task=glue/stsb model.path=/models/roberta-base data.path=/data/glue
    make reproduce-glue                        # the paper's study on a GPU node (DRY_RUN=1: the plan)

The model (``FacebookAI/roberta-base``) and the data (``nyu-mll/glue``, pinned commits) come from the
Hugging Face hub, or from local directories (``model.path``, ``data.path``). Our own loop, not the
Hugging Face Trainer (every optimizer also trains under the Trainer: docs/ecosystem.md): gradient
norms and clipping come before ``step()`` (AlphaAdam overwrites ``p.grad`` in ``step()``), and only
``optimizer.zero_grad()`` clears gradients, so LDAdam's error feedback stays in ``p.grad`` and is
clipped with the gradient, as in its reference (the Trainer's ``model.zero_grad()`` frees it; LDAdam
then adds it back in ``step()``, after clipping).

Each run lives in results/runs/<experiment>/<task>-<model>-<optimizer>-lr<lr>-s<seed>-<hash>/ with
config.yaml, metrics.jsonl, result.json, and checkpoint.pt while it runs. The validation split is
evaluated at the end of every epoch; result.json's ``metrics.best`` is the evaluation with the best
value of the task's main metric, ``metrics.final`` the last. Running the same command again skips a
completed (or diverged) run and resumes an unfinished one from its last checkpoint. Call
``train(cfg)`` to do the same from Python with a config from ``alphaadam.train.config.compose``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from omegaconf import MISSING, DictConfig

from alphaadam.data.glue import (
    Collator,
    GlueTask,
    TrainBatches,
    eval_batches,
    load_configured,
    micro_batches,
    tokenize,
)
from alphaadam.errors import ConfigError
from alphaadam.evals.glue_metrics import compute
from alphaadam.models.hf import check_available, load_classifier, load_tokenizer
from alphaadam.train.config import (
    AT_LEAST_0,
    AT_LEAST_1,
    PROBABILITY,
    Range,
    RunSettings,
    TrainerSettings,
    build_optimizer_from_config,
    validate,
)
from alphaadam.train.distributed import device_summary, resolve_device
from alphaadam.train.divergence import divergence
from alphaadam.train.identity import run_identity
from alphaadam.train.precision import make_precision
from alphaadam.train.schedule import LRSchedule
from alphaadam.train.session import RunSession, run_main, started
from alphaadam.train.state import seed_everything
from alphaadam.train.track import LossTracker

RECIPE = "finetune_glue"


# -- the config schema (configs/finetune_glue.yaml and its groups are validated against it) ---------


@dataclass
class HFModelConfig:
    name: str = MISSING  # short name for run labels and result.json, e.g. "roberta_base"
    path: str = MISSING  # a Hugging Face hub id, or a local directory (model and tokenizer files)
    revision: str | None = None  # hub commit, branch or tag; None: "main"
    dropout: float | None = None  # hidden and attention dropout; None: the checkpoint's
    classifier_dropout: float | None = None  # the classification head's; None: the checkpoint's


@dataclass
class GlueTaskConfig:
    name: str = MISSING  # what result.json's identity.task records, e.g. "rte"
    hub_config: str = MISSING  # configuration of the dataset repository, e.g. "rte"
    text_columns: list[str] = MISSING  # one column (single sentence) or two (a pair)
    label_column: str = "label"
    num_labels: int = MISSING  # 1 for regression
    regression: bool = False
    metrics: list[str] = MISSING  # recorded at every evaluation
    main_metric: str = MISSING  # picks the best evaluation (metrics.best)
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    batch_size: int = MISSING  # examples per optimizer step


@dataclass
class GlueDataConfig:
    hub_id: str = "nyu-mll/glue"
    revision: str | None = None  # dataset repository commit; None: "main"
    path: str | None = None  # local files instead of the hub (see alphaadam/data/glue.py)
    max_length: int = 512  # tokens per example (pair included); longer inputs are truncated
    pad_to_multiple_of: int | None = 8  # dynamic padding rounded up to this (tensor-core friendly)
    max_train_samples: int | None = None  # use the first N training examples (smoke tests)
    max_eval_samples: int | None = None  # and the first N of each evaluation split


@dataclass
class FinetuneTrainerConfig(TrainerSettings):
    epochs: int = MISSING
    micro_batch_size: int | None = None  # examples per forward pass; None: the whole batch
    eval_batch_size: int = 64
    eval_every: int = 0  # steps; 0: at the end of each epoch only (always at the end of each epoch)
    keep_checkpoint: bool = False  # a run's checkpoint is deleted when it ends (RoBERTa-base's: ~1.5 GB)


@dataclass
class FinetuneGlueConfig(RunSettings):
    model: HFModelConfig = field(default_factory=HFModelConfig)
    task: GlueTaskConfig = field(default_factory=GlueTaskConfig)
    data: GlueDataConfig = field(default_factory=GlueDataConfig)
    trainer: FinetuneTrainerConfig = field(default_factory=FinetuneTrainerConfig)

    RANGES: ClassVar[dict] = {
        "trainer.epochs": AT_LEAST_1,
        "trainer.micro_batch_size": AT_LEAST_1,
        "trainer.eval_batch_size": AT_LEAST_1,
        "trainer.eval_every": AT_LEAST_0,
        "model.dropout": PROBABILITY,
        "model.classifier_dropout": PROBABILITY,
        "task.batch_size": AT_LEAST_1,
        "task.num_labels": AT_LEAST_1,
        "data.max_length": Range(4),
        "data.pad_to_multiple_of": AT_LEAST_1,
        "data.max_train_samples": AT_LEAST_1,
        "data.max_eval_samples": AT_LEAST_1,
    }


SCHEMA = FinetuneGlueConfig


def identity(s: DictConfig) -> dict:
    """The fields of result.json that tables select runs by (``task`` without its group prefix)."""
    return run_identity(s, model=s.model.name, task=s.task.name, epochs=s.trainer.epochs)


def preflight(s: DictConfig, resources: bool, checked: set) -> str:
    """The device, the model and tokenizer files (local, cached or fetched from the hub; once per
    model), and the task's dataset (loaded once, so that it is in the cache for the jobs)."""
    task = GlueTask.from_config(s.task)
    name = f"{s.model.name} / {task.name} / {s.optimizer.name}"
    if not resources:
        return f"config ok: {name}"
    device = resolve_device(s.trainer.device)
    model = (s.model.path, s.model.revision)
    if model not in checked:
        check_available(*model)
        checked.add(model)
    splits = load_configured(task, s.data)
    sizes = ", ".join(f"{split} {len(data):,}" for split, data in splits.items())
    source = s.data.path or f"{s.data.hub_id}@{(s.data.revision or 'main')[:7]}"
    return f"ready: {name} on {device_summary(device)}; model {s.model.path}; data {source} ({sizes})"


def load_data(s: DictConfig, task: GlueTask, tokenizer) -> dict:
    """The task's splits, tokenized (no padding: batches are padded to their longest example)."""
    return tokenize(load_configured(task, s.data), tokenizer, task, s.data.max_length)


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


@torch.no_grad()
def evaluate(model, data: dict, plans: dict, task: GlueTask, collator, precision, device) -> dict:
    """Every metric of the task (and the loss) on each evaluation split; the first split's names are
    plain (``accuracy``), the others' suffixed (``accuracy_mismatched``)."""
    model.eval()
    values = {}
    for split in task.eval_splits:
        dataset, predictions, labels = data[split], [], []
        loss_sum = torch.zeros((), device=device)
        for indices in plans[split]:
            batch = to_device(collator(dataset[indices]), device)
            with precision.autocast():
                out = model(**batch)
            logits = out.logits.float()
            predictions.append(logits.squeeze(-1) if task.regression else logits.argmax(-1))
            labels.append(batch["labels"])
            loss_sum += out.loss.float() * len(indices)
        scores = compute(task.metrics, torch.cat(predictions).cpu().numpy(), torch.cat(labels).cpu().numpy())
        scores["val_loss"] = (loss_sum / len(dataset)).item()
        values.update({f"{name}{task.suffix(split)}": value for name, value in scores.items()})
    model.train()
    return values


def train(cfg: DictConfig) -> dict | None:
    """Run, resume or skip the run that ``cfg`` describes; returns its result.json record."""
    settings = validate(cfg, SCHEMA)  # a misspelt key or a wrong type stops here, named
    task = GlueTask.from_config(settings.task)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "finetune_glue runs on one device (RoBERTa-base at batch 32 fits one GPU); run one job per "
            "GPU instead of torchrun: the sweep's gpu_pool launcher runs several at once"
        )
    with started(settings.trainer.device) as dist:
        return _train(cfg, settings, task, dist)


def _train(cfg: DictConfig, s: DictConfig, task: GlueTask, dist) -> dict | None:
    t, device = s.trainer, dist.device
    session = RunSession(cfg, s, RECIPE, identity(s), dist)
    if (previous := session.ended()) is not None:
        return previous

    # -- data: tokenized once; an epoch's order comes from (seed, epoch), batches padded dynamically ---
    tokenizer = load_tokenizer(s.model.path, s.model.revision)
    data = load_data(s, task, tokenizer)
    train_set = data[task.train_split]
    batches = TrainBatches(len(train_set), task.batch_size, s.seed)
    total_steps = t.epochs * batches.steps_per_epoch
    micro_batch = min(t.micro_batch_size or task.batch_size, task.batch_size)
    collator = Collator(tokenizer.pad_token_id, s.data.pad_to_multiple_of, task.regression)
    plans = {
        split: eval_batches([len(ids) for ids in data[split]["input_ids"]], t.eval_batch_size)
        for split in task.eval_splits
    }

    # -- model, optimizer, schedule, precision ------------------------------------------------------
    seed_everything(s.seed)  # the new classifier head's initial weights, then dropout
    model = load_classifier(
        s.model.path,
        num_labels=task.num_labels,
        regression=task.regression,
        revision=s.model.revision,
        dropout=s.model.dropout,
        classifier_dropout=s.model.classifier_dropout,
    ).to(device)
    model.train()  # from_pretrained returns the model in eval mode, without dropout
    optimizer = build_optimizer_from_config(model, s.optimizer)  # bad hyper-parameters stop here, named
    schedule = LRSchedule.from_config(s.scheduler, total_steps)
    precision = make_precision(t.dtype, device)
    tracker = LossTracker(main=task.main_metric, higher_is_better=True)

    with session.running(
        model,
        optimizer,
        precision,
        tracker,
        total_steps=total_steps,
        flops_per_token=6 * model.num_parameters(exclude_embeddings=True),  # matmuls; attention left out
        sampler="glue.TrainBatches",
        steps_per_epoch=batches.steps_per_epoch,
    ):  # resumed: weights, optimizer, scaler, RNG, metrics, data position (session.step)
        compiled = torch.compile(model) if t.compile else model
        session.announce(
            f"{s.model.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters) on "
            f"{task.name}: {len(train_set):,} training examples, {t.epochs} epochs of "
            f"{batches.steps_per_epoch} steps of {task.batch_size} "
            f"({math.ceil(task.batch_size / micro_batch)} x {micro_batch}), "
            f"{s.optimizer.name} lr {s.optimizer.lr:g}, {device} {precision.name}"
        )

        # -- the training loop -------------------------------------------------------------------------
        while session.step < total_steps:
            lr = schedule.apply(optimizer, session.step)
            session.throughput.start()
            indices = batches.indices(session.step)
            loss_sum, step_tokens = torch.zeros((), device=device), 0
            for part in micro_batches(indices, micro_batch):
                batch = collator(train_set[part])
                step_tokens += int(batch["attention_mask"].sum())
                with precision.autocast():
                    loss = compiled(**to_device(batch, device)).loss
                share = len(part) / len(indices)  # the batch's mean loss, whatever the split
                loss_sum += loss.detach() * share
                precision.scaler.scale(loss * share).backward()
            grad_norm = precision.unscale_and_clip(model, optimizer, t.grad_clip)  # the true gradients
            train_loss = loss_sum.item()
            if reason := divergence(train_loss, t.max_loss):
                session.diverge(reason, {"train_loss": train_loss, "lr": lr})
                break
            precision.scaler.step(optimizer)  # masked optimizers overwrite p.grad: norms come first
            precision.scaler.update()
            optimizer.zero_grad(set_to_none=True)  # keeps LDAdam's error in p.grad, clipped with the gradient
            session.advance(step_tokens, len(indices))
            tracker.add_train(train_loss)
            step = session.step

            # -- this step's record: training stats, evaluation, alpha and mask density ---------------
            epoch_end = step % batches.steps_per_epoch == 0
            evaluating = epoch_end or (t.eval_every > 0 and step % t.eval_every == 0)
            values = {}
            if step % t.log_every == 0 or evaluating:
                values.update(session.step_stats(lr, grad_norm))
            if evaluating:
                scores = evaluate(compiled, data, plans, task, collator, precision, device)
                tracker.add_eval(step, scores)
                values.update(scores)
                shown = " | ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
                session.write(f"step {step} (epoch {session.epoch(step):.2f}): {shown}")
            session.end_step(values, evaluated=evaluating, checkpoint=epoch_end)
        else:
            session.complete()
    return session.result


if __name__ == "__main__":
    run_main(train, RECIPE)
