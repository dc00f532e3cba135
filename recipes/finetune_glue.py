"""Fine-tune RoBERTa-base on a GLUE task with any registered optimizer (paper Table 1).

    python recipes/finetune_glue.py task=glue/rte optimizer=alphaadam optimizer.lr=3e-5
    python recipes/finetune_glue.py task=glue/stsb model.path=/models/roberta-base data.path=/data/glue
    make reproduce-glue                        # the paper's study on a GPU node (DRY_RUN=1: the plan)

The model (``FacebookAI/roberta-base``) and the data (``nyu-mll/glue``, pinned commits) come from the
Hugging Face hub, or from local directories (``model.path``, ``data.path``). Our own loop, not the
Hugging Face Trainer: the Trainer calls ``model.zero_grad()``, which would wipe LDAdam's error
feedback (kept in ``p.grad``), and AlphaAdam overwrites ``p.grad`` in ``step()``; here gradient norms
and clipping come before ``step()`` and only ``optimizer.zero_grad()`` clears gradients.

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

import torch
from omegaconf import DictConfig

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
from alphaadam.models.hf import load_classifier, load_tokenizer
from alphaadam.train.config import FinetuneGlueConfig, build_optimizer_from_config, validate
from alphaadam.train.divergence import divergence
from alphaadam.train.precision import make_precision
from alphaadam.train.schedule import LRSchedule
from alphaadam.train.session import RunSession, run_main, started
from alphaadam.train.state import seed_everything
from alphaadam.train.track import LossTracker

RECIPE = "finetune_glue"


def identity(cfg: DictConfig) -> dict:
    """The fields of result.json that tables select runs by (``task`` without its group prefix)."""
    fields = {
        "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.get("lr"),
        "seed": cfg.seed,
        "model": cfg.model.name,
        "task": cfg.task.name,
        "epochs": cfg.trainer.epochs,
    }
    if cfg.optimizer.get("rank") is not None:  # GaLore and LDAdam: a row per rank
        fields["rank"] = cfg.optimizer.rank
    return fields


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
    settings = validate(cfg, FinetuneGlueConfig)  # a misspelt key or a wrong type stops here, named
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
            optimizer.zero_grad(set_to_none=True)  # never model.zero_grad(): LDAdam keeps its error there
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
