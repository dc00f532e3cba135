"""Fine-tune a causal LM (Llama-2-7B) on GSM8K with any registered optimizer, scored with lm-eval
(paper Table 2, Figure 3).

    python recipes/finetune_gsm8k.py model=tiny_llama data=embedded     # a minute on a CPU, offline
    python recipes/finetune_gsm8k.py optimizer=alphaadam optimizer.lr=5e-5  # Llama-2-7B (gated: below)
    make reproduce-gsm8k                                                 # the study (DRY_RUN=1: the plan)

The model is ``meta-llama/Llama-2-7b-hf`` (a gated repository: accept its licence on the hub and
``huggingface-cli login``, or set ``model.path`` to a local copy), or ``model=tiny_llama``: a tiny
random Llama with a tokenizer trained in-process. The rows are ``openai/gsm8k`` at a pinned commit
(``data=hub``), a local directory (``data.source=DIR``), or ``data=embedded``: the eight GSM8K
problems lm-eval ships, used as both splits (alphaadam/data/gsm8k.py). Each example is the prompt
then the answer and EOS; the loss is on the answer and EOS only, each sequence's token mean
averaged over the batch, so that micro-batching (``trainer.micro_batch_size``) does not change it.
The learning rate warms up for 20 steps and decays linearly to 0; there is no clipping (the
anchors' setting) unless ``trainer.grad_clip`` > 0.

At the end the fine-tuned model is saved as a Hugging Face folder (``model/`` in the run directory)
and scored 0-shot with lm-eval on the test split (alphaadam/evals/gsm8k.py): ``metrics.final.accuracy``
is Table 2's strict-match exact match, ``accuracy_flexible`` the flexible-extract one, and
``gsm8k_eval/`` keeps lm-eval's results and samples. ``metrics.final.train_loss`` is the mean
training loss of the last ``trainer.log_every`` steps. Running the same command again skips a
completed run and resumes an unfinished one from its last checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from omegaconf import MISSING, DictConfig
from torch.distributed.tensor import DTensor

from alphaadam.data.glue import TrainBatches, micro_batches
from alphaadam.data.gsm8k import TRAIN_ROWS, collate, encode, load_rows, sequence_losses
from alphaadam.errors import ConfigError
from alphaadam.evals import gsm8k as gsm8k_eval
from alphaadam.models import tiny_llama
from alphaadam.models.hf import check_available, load_causal_lm, load_config, load_tokenizer
from alphaadam.train import fsdp
from alphaadam.train.config import (
    AT_LEAST_0,
    AT_LEAST_1,
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

RECIPE = "finetune_gsm8k"
PAPER_STEPS = 702  # App. F.3: 3 epochs of the 7,473 training rows at batch 32


# -- the config schema (configs/finetune_gsm8k/finetune_gsm8k.yaml and its groups are checked against it)


@dataclass
class TinyLlamaConfig:
    vocab_size: int = 300
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    mlp: int = 128


@dataclass
class CausalLMConfig:
    name: str = MISSING  # short name for run labels and result.json, e.g. "llama2_7b"
    path: str | None = None  # a hub id or a local directory; None with ``tiny``
    revision: str | None = None
    tiny: TinyLlamaConfig | None = None  # a random tiny Llama built in-process instead of ``path``


@dataclass
class GSM8KDataConfig:
    source: str = "hub"  # hub | embedded | a local directory with train.jsonl and test.jsonl
    hub_id: str = "openai/gsm8k"
    config: str = "main"
    revision: str | None = None
    template: str = "Question: {question}\nAnswer:"
    max_length: int = 512
    max_train_samples: int | None = None


@dataclass
class EvalConfig:
    protocol: str = "lm_eval"
    num_fewshot: int = 0
    max_gen_toks: int = 256
    batch_size: int = 16
    limit: int | None = None


@dataclass
class GSM8KTrainerConfig(TrainerSettings):
    epochs: int = MISSING
    batch_size: int = 32  # sequences per optimizer step
    micro_batch_size: int = 1  # sequences per forward pass
    activation_checkpointing: bool = True
    pure_bf16: bool = False  # bf16 weights and optimizer states (the anchors'); default: fp32 master weights
    save_model: bool = True


@dataclass
class FinetuneGSM8KConfig(RunSettings):
    lowrank_rank: int = 512
    model: CausalLMConfig = field(default_factory=CausalLMConfig)
    data: GSM8KDataConfig = field(default_factory=GSM8KDataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: GSM8KTrainerConfig = field(default_factory=GSM8KTrainerConfig)

    RANGES: ClassVar[dict] = {
        "lowrank_rank": AT_LEAST_1,
        "trainer.epochs": AT_LEAST_1,
        "trainer.batch_size": AT_LEAST_1,
        "trainer.micro_batch_size": AT_LEAST_1,
        "data.max_length": Range(8),
        "data.max_train_samples": AT_LEAST_1,
        "eval.num_fewshot": AT_LEAST_0,
        "eval.max_gen_toks": AT_LEAST_1,
        "eval.batch_size": AT_LEAST_1,
        "eval.limit": AT_LEAST_1,
    }


SCHEMA = FinetuneGSM8KConfig


def identity(s: DictConfig) -> dict:
    """The fields of result.json that tables select runs by."""
    return run_identity(s, model=s.model.name, task="gsm8k", epochs=s.trainer.epochs)


def preflight(s: DictConfig, resources: bool, checked: set) -> str:
    """The device, the model's files (local, cached or fetched; once per model) and the rows."""
    name = f"{s.model.name} / gsm8k / {s.optimizer.name}"
    if not resources:
        return f"config ok: {name}"
    device = resolve_device(s.trainer.device)
    if s.model.tiny is None and (s.model.path, s.model.revision) not in checked:
        check_available(s.model.path, s.model.revision)
        checked.add((s.model.path, s.model.revision))
    rows = load_rows(s.data.source, s.data.hub_id, s.data.config, s.data.revision)
    sizes = ", ".join(f"{split} {len(r):,}" for split, r in rows.items())
    model = s.model.path or "tiny (built in-process)"
    return f"ready: {name} on {device_summary(device)}; model {model}; data {s.data.source} ({sizes})"


def load_model(s: DictConfig, rows: list[dict], dtype: torch.dtype, weights: bool = True):
    """``(model, tokenizer)``: the configured checkpoint (without ``weights``: its shape only, on the
    meta device), or a tiny Llama whose tokenizer learns the rows (the same on every process)."""
    if s.model.tiny is not None:
        texts = [s.data.template.format(question=r["question"]) + " " + r["answer"] for r in rows]
        model, tokenizer = tiny_llama.build(texts * 5, seed=s.seed, **s.model.tiny)
        return model.to(dtype), tokenizer
    if not s.model.path:
        raise ConfigError("model.path is empty: set a hub id or a local directory, or use model=tiny_llama")
    tokenizer = load_tokenizer(s.model.path, s.model.revision)
    if weights:
        return load_causal_lm(s.model.path, s.model.revision, dtype), tokenizer
    from transformers import AutoModelForCausalLM

    config = load_config(s.model.path, s.model.revision)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype), tokenizer


def train(cfg: DictConfig) -> dict | None:
    """Run, resume or skip the run that ``cfg`` describes; returns its result.json record."""
    settings = validate(cfg, SCHEMA)  # a misspelt key or a wrong type stops here, named
    if settings.eval.protocol not in gsm8k_eval.PROTOCOLS:
        raise ConfigError(
            f"eval.protocol={settings.eval.protocol!r} is not one of {', '.join(gsm8k_eval.PROTOCOLS)}"
        )
    with started(settings.trainer.device) as dist:
        return _train(cfg, settings, dist)


def _train(cfg: DictConfig, s: DictConfig, dist) -> dict | None:
    t, device = s.trainer, dist.device
    if t.fused_backward_update:
        raise ConfigError(
            "trainer.fused_backward_update is not supported by the GSM8K recipe (FSDP2 reduces whole "
            "gradients); use AdaLomo's step() form here, or the fused form with pretrain_gpt or finetune_glue"
        )
    session = RunSession(cfg, s, RECIPE, identity(s), dist)
    if (previous := session.ended()) is not None:
        return previous

    # -- data: every row encoded once; an epoch's order comes from (seed, epoch) ----------------------
    splits = load_rows(s.data.source, s.data.hub_id, s.data.config, s.data.revision)
    rows = splits["train"][: s.data.max_train_samples]
    batches = TrainBatches(len(rows), t.batch_size, s.seed)
    total_steps = t.epochs * batches.steps_per_epoch
    if s.data.source == "hub" and s.data.max_train_samples is None and len(rows) == TRAIN_ROWS:
        assert t.batch_size != 32 or t.epochs != 3 or total_steps == PAPER_STEPS  # the paper's count

    # -- model, optimizer, schedule, precision ------------------------------------------------------
    precision = make_precision(t.dtype, device)  # bf16 autocast over fp32 master weights on GPUs
    weights = torch.bfloat16 if t.pure_bf16 else torch.float32
    seed_everything(s.seed)
    model, tokenizer = load_model(s, rows, weights, weights=dist.is_main)
    if dist.enabled:  # FSDP2: each decoder layer sharded, then the root; rank 0's weights broadcast
        compute = None if t.pure_bf16 or precision.name == "float32" else precision.dtype
        full, config = model.state_dict() if dist.is_main else None, model.config
        model = fsdp.shard(lambda: type(model)(config), full, dist, compute)
        precision = make_precision("float32", device)  # FSDP2 casts; no autocast on top
    model.to(device).train()
    if t.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train_set = [encode(r, tokenizer, s.data.template, s.data.max_length) for r in rows]
    optimizer = build_optimizer_from_config(model, s.optimizer)  # bad hyper-parameters stop here, named
    schedule = LRSchedule.from_config(s.scheduler, total_steps)
    tracker = LossTracker(main="accuracy", higher_is_better=True)

    with session.running(
        model,
        optimizer,
        precision,
        tracker,
        total_steps=total_steps,
        flops_per_token=6 * model.num_parameters(exclude_embeddings=True),
        sampler="glue.TrainBatches",
        steps_per_epoch=batches.steps_per_epoch,
    ):  # resumed: weights, optimizer, RNG, metrics, data position (session.step)
        micro = min(t.micro_batch_size, t.batch_size)
        session.announce(
            f"{s.model.name} ({model.num_parameters() / 1e6:.2f}M parameters) on GSM8K: {len(rows):,} "
            f"training rows, {t.epochs} epochs of {batches.steps_per_epoch} steps of {t.batch_size} "
            f"({math.ceil(t.batch_size / micro)} x {micro}), {s.optimizer.name} lr {s.optimizer.lr:g}, "
            f"{device} {precision.name}"
        )

        # -- the training loop -------------------------------------------------------------------------
        while session.step < total_steps:
            lr = schedule.apply(optimizer, session.step)
            session.throughput.start()
            indices = batches.indices(session.step)
            mine = indices[dist.rank :: dist.world_size]  # FSDP2 averages gradients over processes
            loss_sum, step_tokens = torch.zeros((), device=device), torch.zeros((), device=device)
            for part in micro_batches(mine, micro):
                batch = {
                    k: v.to(device)
                    for k, v in collate([train_set[i] for i in part], tokenizer.pad_token_id).items()
                }
                step_tokens += batch["attention_mask"].sum()
                with precision.autocast():
                    logits = model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).logits
                # the batch's mean over sequences, times the processes whose gradients FSDP2 averages
                loss = sequence_losses(logits, batch["labels"]).sum() * dist.world_size / len(indices)
                loss_sum += loss.detach()
                loss.backward()
            grad_norm = precision.unscale_and_clip(model, optimizer, t.grad_clip)
            if isinstance(grad_norm, DTensor):
                grad_norm = grad_norm.full_tensor()
            train_loss = all_reduce_sum(loss_sum, dist).item() / dist.world_size
            step_tokens = int(all_reduce_sum(step_tokens, dist).item())
            if reason := divergence(train_loss, t.max_loss):
                session.diverge(reason, {"train_loss": train_loss, "lr": lr})
                break
            optimizer.step()  # masked optimizers overwrite p.grad: norms come first
            optimizer.zero_grad(set_to_none=True)  # keeps LDAdam's error in p.grad
            session.advance(step_tokens, len(indices))
            tracker.add_train(train_loss)
            step = session.step

            # -- this step's record; at the end, the saved model and its lm-eval score -----------------
            last = step == total_steps
            if last:  # FSDP2: every process writes its shards before rank 0 scores alone
                session.stage_checkpoint()
            values = session.step_stats(lr, grad_norm) if step % t.log_every == 0 or last else {}
            if last and (scores := score(s, model, tokenizer, session)):
                values.update(scores)
                tracker.add_eval(step, {k: v for k, v in values.items() if k.startswith("accuracy")})
                session.write(f"step {step}: GSM8K accuracy {values['accuracy']:.4f} (strict match)")
            epoch_end = step % batches.steps_per_epoch == 0
            session.end_step(values, evaluated=last, checkpoint=epoch_end)
        else:
            session.complete()
    return session.result


def score(s: DictConfig, model, tokenizer, session) -> dict:
    """Save the fine-tuned model (``model/``) and score it with lm-eval on the test split (rank 0;
    under FSDP2 the weights are gathered into an unsharded copy first)."""
    dist = session.dist
    if dist.enabled:
        full = fsdp.full_state(model)  # every process takes part
        if not dist.is_main:
            return {}
        with torch.device("meta"):
            plain = type(model)(model.config)
        plain.load_state_dict(full, assign=True)
        rotary = plain.model.rotary_emb  # a buffer outside the state dict
        plain.model.rotary_emb = type(rotary)(config=plain.config)
        model = plain
    model.eval()
    model.config.use_cache = True  # off under activation checkpointing; generation needs it
    if s.trainer.save_model:
        model.save_pretrained(session.dir / "model")
        tokenizer.save_pretrained(session.dir / "model")
    e = s.eval
    lm = gsm8k_eval.huggingface_lm(model, tokenizer, e.protocol, e.batch_size, str(session.dist.device))
    data = s.data.source if s.data.source != "hub" else "hub"
    scores = gsm8k_eval.evaluate(
        lm,
        session.dir / "gsm8k_eval",
        data=data,
        revision=s.data.revision,
        protocol=e.protocol,
        num_fewshot=e.num_fewshot,
        limit=e.limit,
        max_gen_toks=e.max_gen_toks,
    )
    if not dist.enabled:
        model.train()
    return scores


if __name__ == "__main__":
    run_main(train, RECIPE)
