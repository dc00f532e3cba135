"""Structured-config schemas of the recipes, and their start-up validation.

Hydra composes the YAML files under ``configs/``; :func:`validate` then merges the result into the
recipe's schema, so a misspelt key or a value of the wrong type stops the run before any work with
a :class:`ConfigError` naming the key. The schema is applied at start-up rather than registered in
Hydra's ConfigStore so that any caller of Hydra's compose API (tests, the sweep planner) composes
the same config, and hence finds the same run directory, without importing this module first.

The ``optimizer`` node is free-form: ``name`` is a registry name and every other key a keyword of
that optimizer (see :func:`optimizer_settings`); the registry names any key it does not take.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alphaadam.optim import build_optimizer, optimizer_entry

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A configuration value is missing, misspelt, of the wrong type or out of range."""


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
class SchedulerConfig:
    name: str = "cosine"  # cosine | linear | constant
    warmup_steps: int | None = None  # None: warmup_fraction * trainer.max_steps
    warmup_fraction: float = 0.0
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio
    decay_steps: int | None = None  # None: trainer.max_steps


@dataclass
class TrainerConfig:
    max_steps: int = MISSING  # optimizer steps
    tokens_per_step: int | None = None  # None: one micro-batch per process, no accumulation
    micro_batch_size: int = MISSING
    grad_clip: float = 1.0  # 0 disables clipping (the norm is still logged)
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = (
        "auto"  # auto (bf16 on GPUs that have it, else fp16; fp32 on CPU) | float32 | bfloat16 | float16
    )
    compile: bool = False  # torch.compile the model
    eval_every: int = 0  # 0: only at eval_at_fractions (and step 0)
    eval_batches: int = 20  # micro-batches in the fixed validation set
    eval_at_fractions: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 1.0])
    log_every: int = 10
    mask_stats_every: int = 0  # 0: never; else alpha and mask density per tensor every N steps
    checkpoint_every: int = 0  # 0: only at the end
    max_loss: float = 20.0  # a training loss above this (or NaN/inf) ends the run as "diverged"
    progress: str = "auto"  # auto (a bar on a terminal, else lines) | bar | lines | none
    peak_flops: float | None = None  # per device, for MFU; None: looked up from the GPU's name
    fused_backward_update: bool = False  # update inside backward, keep no gradients (AdaLomo)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "alphaadam"
    entity: str | None = None
    mode: str | None = None  # online | offline | disabled; None: $WANDB_MODE, else offline
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    root: str = "results/runs"
    label: str = MISSING
    exclude: list[str] = field(default_factory=list)
    dir: str | None = None


@dataclass
class PretrainGPTConfig:
    experiment: str = MISSING
    seed: int = 0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lowrank_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # GaLore and LDAdam
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---- recipes/finetune_glue.py ----------------------------------------------------------------------


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
class FinetuneTrainerConfig:
    epochs: int = MISSING
    micro_batch_size: int | None = None  # examples per forward pass; None: the whole batch
    eval_batch_size: int = 64
    eval_every: int = 0  # steps; 0: at the end of each epoch only (always at the end of each epoch)
    grad_clip: float = 1.0  # 0 disables clipping (the norm is still logged)
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = (
        "auto"  # auto (bf16 on GPUs that have it, else fp16; fp32 on CPU) | float32 | bfloat16 | float16
    )
    compile: bool = False  # torch.compile the model
    log_every: int = 10
    mask_stats_every: int = 0  # 0: never; else alpha and mask density per tensor every N steps
    checkpoint_every: int = 0  # steps; 0: at the end of each epoch only
    keep_checkpoint: bool = False  # keep checkpoint.pt after the run ends (it is only needed to resume)
    max_loss: float = 20.0  # a training loss above this (or NaN/inf) ends the run as "diverged"
    progress: str = "auto"  # auto (a bar on a terminal, else lines) | bar | lines | none
    peak_flops: float | None = None  # per device, for MFU; None: looked up from the GPU's name
    fused_backward_update: bool = False  # update inside backward, keep no gradients (AdaLomo)


@dataclass
class FinetuneGlueConfig:
    experiment: str = MISSING
    seed: int = 0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lowrank_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # GaLore and LDAdam
    model: HFModelConfig = field(default_factory=HFModelConfig)
    task: GlueTaskConfig = field(default_factory=GlueTaskConfig)
    data: GlueDataConfig = field(default_factory=GlueDataConfig)
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: FinetuneTrainerConfig = field(default_factory=FinetuneTrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunConfig = field(default_factory=RunConfig)


# The schema of each recipe's entry config (configs/<recipe>.yaml).
SCHEMAS = {"pretrain_gpt": PretrainGPTConfig, "finetune_glue": FinetuneGlueConfig}


def schema_for(recipe: str) -> type:
    try:
        return SCHEMAS[recipe]
    except KeyError:
        raise ConfigError(f"no config schema for recipe {recipe!r}; known: {', '.join(SCHEMAS)}") from None


CHOICES = {
    "scheduler.name": ("cosine", "linear", "constant"),
    "trainer.device": ("auto", "cpu", "cuda"),
    "trainer.dtype": ("auto", "float32", "bfloat16", "float16"),
    "trainer.progress": ("auto", "bar", "lines", "none"),
    "logger.name": ("none", "wandb"),
    "logger.mode": (None, "online", "offline", "disabled"),
}

LOWER_BOUNDS = {
    "trainer.max_steps": 1,
    "trainer.micro_batch_size": 1,
    "trainer.eval_batches": 1,
    "trainer.log_every": 1,
    "trainer.eval_every": 0,
    "trainer.checkpoint_every": 0,
    "trainer.mask_stats_every": 0,
    "trainer.grad_clip": 0,
    "model.block_size": 1,
    "trainer.epochs": 1,
    "trainer.eval_batch_size": 1,
    "task.batch_size": 1,
    "task.num_labels": 1,
    "data.max_length": 4,
    "data.pad_to_multiple_of": 1,
    "data.max_train_samples": 1,
    "data.max_eval_samples": 1,
}


def _first_line(err: Exception) -> str:
    text = str(err)
    msg = text.splitlines()[0] if text else type(err).__name__
    key = getattr(err, "full_key", None)
    return f"{key}: {msg}" if key and key not in msg else msg


def validate(cfg: DictConfig, schema: type = PretrainGPTConfig) -> DictConfig:
    """``cfg`` resolved and merged into ``schema``: every key known, typed, and set."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain.pop("hydra", None)
        typed = OmegaConf.merge(OmegaConf.structured(schema), plain)
        missing = sorted(OmegaConf.missing_keys(typed))
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config: {_first_line(err)}") from None
    if missing:
        raise ConfigError(f"config keys without a value: {', '.join(missing)}")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(typed, key, default="<absent>")
        if value != "<absent>" and value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, allowed))}")
    for key, low in LOWER_BOUNDS.items():
        value = OmegaConf.select(typed, key)
        if value is not None and value < low:
            raise ConfigError(f"{key}={value} must be at least {low}")
    if "optimizer" in typed:
        optimizer_settings(typed.optimizer)
    return typed


def optimizer_settings(node) -> tuple[str, dict]:
    """``(registry name, keyword arguments)`` of an optimizer node; unknown names or keys raise."""
    settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    name = settings.pop("name", None)
    if not name:
        raise ConfigError("optimizer.name is not set (pick one with optimizer=<name>)")
    try:
        entry = optimizer_entry(name)
    except ValueError as err:
        raise ConfigError(f"optimizer.name: {err}") from None
    unknown = sorted(set(settings) - entry.accepts)
    if unknown:
        raise ConfigError(
            f"optimizer {name!r} does not take {', '.join(f'optimizer.{k}' for k in unknown)}; "
            f"it takes: {', '.join(sorted(entry.accepts))}"
        )
    return name, settings


def build_optimizer_from_config(model, node):
    """The optimizer an ``optimizer`` node describes; bad values raise a ConfigError naming them."""
    name, hparams = optimizer_settings(node)
    try:
        return build_optimizer(model, name, **hparams)
    except (TypeError, ValueError, IndexError, KeyError) as err:  # what constructors raise on bad values
        shown = ", ".join(f"{k}={v!r}" for k, v in hparams.items())
        raise ConfigError(
            f"optimizer {name!r} rejected its settings ({shown}): {type(err).__name__}: {err}"
        ) from None


def compose(
    config_name: str, overrides: list[str] | None = None, config_dir: Path | str = CONFIG_DIR
) -> DictConfig:
    """Compose a recipe config the way its ``@hydra.main`` entry does (for tests and sweeps)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
