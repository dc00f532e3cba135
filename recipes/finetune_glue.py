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
import sys
import time

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from alphaadam.data.glue import (
    Collator,
    GlueTask,
    TrainBatches,
    eval_batches,
    load_configured,
    micro_batches,
    tokenize,
)
from alphaadam.evals.glue_metrics import compute
from alphaadam.models.hf import load_classifier, load_tokenizer
from alphaadam.runs.loggers import make_logger, wandb_run_id
from alphaadam.runs.recorder import RunRecorder, sigterm_as_interrupt
from alphaadam.train import distributed
from alphaadam.train.config import ConfigError, FinetuneGlueConfig, build_optimizer_from_config, validate
from alphaadam.train.divergence import divergence
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
    dist = distributed.setup(settings.trainer.device)
    try:
        with sigterm_as_interrupt():
            return _train(cfg, settings, task, dist)
    finally:
        distributed.teardown(dist)


def _train(cfg: DictConfig, s: DictConfig, task: GlueTask, dist) -> dict | None:
    t, device = s.trainer, dist.device

    # -- the run directory: an ended run is skipped ---------------------------------------------------
    recorder = RunRecorder(cfg, RECIPE, identity(s), None)
    if recorder.finished:
        print(f"already {recorder.previous['status']}, skipping: {recorder.dir} (delete it to run again)")
        return recorder.previous

    # -- data: tokenized once; an epoch's order comes from (seed, epoch), batches padded dynamically ---
    tokenizer = load_tokenizer(s.model.path, s.model.revision)
    data = load_data(s, task, tokenizer)
    train_set = data[task.train_split]
    batches = TrainBatches(len(train_set), task.batch_size, s.seed)
    total_steps = recorder.total_steps = t.epochs * batches.steps_per_epoch
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
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tracker, throughput = LossTracker(main=task.main_metric, higher_is_better=True), Throughput()
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * model.num_parameters(exclude_embeddings=True)  # matmuls; attention left out
    peak = t.peak_flops or peak_flops(device, precision.name)
    wandb_id = wandb_run_id(s.experiment, recorder.dir)

    with recorder.recording():
        # -- resume from the last checkpoint: weights, optimizer, scaler, RNG, metrics, data position --
        step, tokens_seen, elapsed_before = 0, 0, 0.0
        checkpoint = load_checkpoint(recorder.checkpoint_path, device)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            precision.scaler.load_state_dict(checkpoint["scaler"])
            tracker.load_state_dict(checkpoint["tracker"])
            set_rng_state(checkpoint["rng"], device)
            step, tokens_seen = checkpoint["step"], checkpoint["tokens"]
            elapsed_before, wandb_id = checkpoint["elapsed_s"], checkpoint["wandb_id"]
            del checkpoint
        recorder.metrics.truncate_after(step)  # drop what a killed session logged after it
        recorder.begin(step, metrics=tracker.metrics())
        session_start = time.perf_counter()

        compiled = torch.compile(model) if t.compile else model
        config = OmegaConf.to_container(cfg, resolve=True)
        logger = make_logger(s.logger, recorder.dir, s.run.label, config, wandb_id)
        recorder.on_exit(logger.finish)
        progress = Progress(total_steps, step, t.progress)
        recorder.on_exit(lambda status: progress.close())
        print(
            f"{recorder.dir}\n{s.model.name} ({n_params / 1e6:.2f}M parameters) on {task.name}: "
            f"{len(train_set):,} training examples, {t.epochs} epochs of {batches.steps_per_epoch} steps "
            f"of {task.batch_size} ({math.ceil(task.batch_size / micro_batch)} x {micro_batch}), "
            f"{s.optimizer.name} lr {s.optimizer.lr:g}, {device} {precision.name}"
            + (f", resuming at step {step}" if step else "")
        )

        def elapsed() -> float:
            return elapsed_before + time.perf_counter() - session_start

        def record(values: dict) -> dict:
            """One line of metrics.jsonl (and of W&B)."""
            epoch = round(step / batches.steps_per_epoch, 4)
            line = {
                "step": step,
                "epoch": epoch,
                "tokens": tokens_seen,
                "time_s": round(elapsed(), 3),
                **values,
            }
            recorder.metrics.append(line)
            logger.log(line)
            return line

        def summary() -> dict:
            """result.json's step, metrics, timing and memory."""
            speed = throughput.summary(flops_per_token, 1, peak)
            metrics = tracker.metrics()
            if tracker.best_step is not None:
                metrics["best_epoch"] = round(tracker.best_step / batches.steps_per_epoch, 4)
            return dict(
                step=step,
                tokens=tokens_seen,
                epoch=round(step / batches.steps_per_epoch, 4),
                metrics=metrics,
                timing={**recorder.result.get("timing", {}), "wall_s": elapsed(), **speed},
                memory=memory_record(device, optimizer, n_params),
            )

        def save() -> None:
            state = {
                "step": step,
                "tokens": tokens_seen,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": precision.scaler.state_dict(),
                "tracker": tracker.state_dict(),
                "rng": rng_state(device),
                "data": {"sampler": "glue.TrainBatches", "seed": s.seed, "next_step": step},
                "elapsed_s": elapsed(),
                "wandb_id": wandb_id,
                "run_id": recorder.run_id,
            }
            save_checkpoint(recorder.checkpoint_path, state)

        # -- the training loop -------------------------------------------------------------------------
        reset_peak_memory(device)
        while step < total_steps:
            lr = schedule.apply(optimizer, step)
            throughput.start()
            indices = batches.indices(step)
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
                step += 1
                record({"train_loss": train_loss, "lr": lr})
                recorder.end("diverged", f"{reason} at step {step}", **summary())
                progress.write(f"DIVERGED at step {step}: {reason}; status 'diverged' in {recorder.dir}")
                break
            precision.scaler.step(optimizer)  # masked optimizers overwrite p.grad: norms come first
            precision.scaler.update()
            optimizer.zero_grad(set_to_none=True)  # keeps LDAdam's error in p.grad, clipped with the gradient
            step += 1
            tokens_seen += step_tokens
            throughput.stop(step_tokens, len(indices))
            tracker.add_train(train_loss)

            # -- this step's record: training stats, evaluation, alpha and mask density ---------------
            epoch_end = step % batches.steps_per_epoch == 0
            evaluating = epoch_end or (t.eval_every > 0 and step % t.eval_every == 0)
            values = {}
            if step % t.log_every == 0 or evaluating:
                values.update(
                    train_loss=tracker.take_train(),
                    lr=lr,
                    grad_norm=grad_norm.item(),
                    tokens_per_s=throughput.window_rate(),
                    peak_bytes=peak_memory(device)["peak_bytes"],
                )
            if evaluating:
                scores = evaluate(compiled, data, plans, task, collator, precision, device)
                tracker.add_eval(step, scores)
                values.update(scores)
                shown = " | ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
                progress.write(f"step {step} (epoch {step / batches.steps_per_epoch:.2f}): {shown}")
            if t.mask_stats_every and step % t.mask_stats_every == 0:
                values.update(mask_stats_record(optimizer))
            progress.step(record(values) if values else None)
            if evaluating:
                recorder.update(**summary())
            if epoch_end or (t.checkpoint_every and step % t.checkpoint_every == 0):
                save()
        else:
            recorder.end("completed", None, **summary())
            progress.write(completion_line(recorder, task))
        if not t.keep_checkpoint:  # ended: the checkpoint was only there to resume
            recorder.checkpoint_path.unlink(missing_ok=True)
        logger.summary({"status": recorder.result.get("status"), **_numbers(tracker.metrics()["final"])})
    return recorder.result or None


def _numbers(values: dict) -> dict:
    return {k: v for k, v in values.items() if isinstance(v, (int, float))}


def completion_line(recorder: RunRecorder, task: GlueTask) -> str:
    r, main = recorder.result, task.main_metric
    final, best = r["metrics"]["final"], r["metrics"]["best"]
    return (
        f"completed {r['step']} steps: {main} {final.get(main, float('nan')):.4f} "
        f"(best {best.get(main, float('nan')):.4f} at epoch {r['metrics'].get('best_epoch')}), "
        f"{r['timing'].get('samples_per_s') or 0:,.0f} examples/s; {recorder.dir}/result.json"
    )


@hydra.main(version_base=None, config_path="../configs", config_name="finetune_glue")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except STOPS as err:  # a config, device, model or data problem: one clear line, no traceback
        print(f"finetune_glue: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("finetune_glue: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
