"""The config keys every recipe shares, and start-up validation against a recipe's schema.

Hydra composes the YAML files under ``configs/``; :func:`validate` then merges the result into the
recipe's schema, so a misspelt key or a value of the wrong type stops the run before any work with
a :class:`ConfigError` naming the key. The schema is applied at start-up rather than registered in
Hydra's ConfigStore so that any caller of Hydra's compose API (tests, the sweep planner) composes
the same config, and hence finds the same run directory, without importing this module first.

The ``optimizer`` node is free-form: ``name`` is a registry name and every other key a keyword of
that optimizer (see :func:`optimizer_settings`); the registry names any key it does not take.
"""

import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alphaadam.errors import ConfigError, error_line
from alphaadam.optim import build_optimizer, optimizer_entry
from alphaadam.paths import CONFIG_DIR, hydra_search


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # cosine | linear | constant
    warmup_steps: int | None = None  # None: warmup_fraction * trainer.max_steps
    warmup_fraction: float = 0.0
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio
    decay_steps: int | None = None  # None: trainer.max_steps


@dataclass
class TrainerSettings:
    """The ``trainer`` keys every recipe has (a recipe's trainer schema derives from this one)."""

    grad_clip: float = 1.0  # 0 disables clipping (the norm is still logged)
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = (
        "auto"  # auto (bf16 on GPUs that have it, else fp16; fp32 on CPU) | float32 | bfloat16 | float16
    )
    compile: bool = False  # torch.compile the model
    log_every: int = 10
    mask_stats_every: int = 0  # 0: never; else alpha and mask density per tensor every N steps
    checkpoint_every: int = 0  # steps; 0: only where the recipe checkpoints (its end, each epoch's)
    keep_checkpoint: bool = True  # keep checkpoint.pt after the run ends (it is only needed to resume)
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
class RunSettings:
    """The keys every recipe's config has: what :class:`~alphaadam.train.session.RunSession` and the
    optimizer files read. A recipe's schema derives from it and adds its model, data and trainer."""

    experiment: str = MISSING
    seed: int = 0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lowrank_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # GaLore and LDAdam
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunConfig = field(default_factory=RunConfig)


CHOICES = {
    "scheduler.name": ("cosine", "linear", "constant"),
    "trainer.device": ("auto", "cpu", "cuda"),
    "trainer.dtype": ("auto", "float32", "bfloat16", "float16"),
    "trainer.progress": ("auto", "bar", "lines", "none"),
    "logger.name": ("none", "wandb"),
    "logger.mode": (None, "online", "offline", "disabled"),
}


@dataclass(frozen=True)
class Range:
    """An interval a setting must lie in; ``open_low``/``open_high`` exclude the end point."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'greater than' if self.open_low else 'at least'} {self.low:g}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


AT_LEAST_1, AT_LEAST_0, POSITIVE = Range(1), Range(0), Range(0, open_low=True)
FRACTION, PROBABILITY = Range(0, 1), Range(0, 1, open_high=True)  # a beta or a dropout rate is < 1

# The ranges of the settings every recipe has, by dotted key (a list's range applies to each item).
# A recipe's schema adds its own in a ``RANGES`` class variable; optimizer hyper-parameters are in
# OPTIMIZER_RANGES.
RANGES = {
    "seed": AT_LEAST_0,
    "adam_betas": PROBABILITY,
    "lowrank_betas": PROBABILITY,
    "scheduler.warmup_steps": AT_LEAST_0,
    "scheduler.warmup_fraction": PROBABILITY,
    "scheduler.min_lr_ratio": FRACTION,  # below 0 the learning rate turns negative (gradient ascent)
    "scheduler.decay_steps": AT_LEAST_1,
    "trainer.log_every": AT_LEAST_1,
    "trainer.checkpoint_every": AT_LEAST_0,
    "trainer.mask_stats_every": AT_LEAST_0,
    "trainer.grad_clip": AT_LEAST_0,
    "trainer.max_loss": POSITIVE,
    "trainer.peak_flops": POSITIVE,
}

# The hyper-parameters optimizers share, checked under ``optimizer.`` for any optimizer that takes them.
OPTIMIZER_RANGES = {
    "lr": POSITIVE,
    "weight_decay": AT_LEAST_0,
    "eps": POSITIVE,
    "betas": PROBABILITY,
    "momentum": PROBABILITY,
    "dampening": FRACTION,
    "rank": AT_LEAST_1,
    "update_proj_gap": AT_LEAST_1,
    "alpha_max": POSITIVE,
    "scale": POSITIVE,
}


def check_ranges(node, ranges: dict[str, Range], prefix: str = "") -> None:
    """ConfigError for the first setting of ``node`` outside its range, with the range."""
    for key, allowed in ranges.items():
        value = OmegaConf.select(node, key) if isinstance(node, DictConfig) else node.get(key)
        items = list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not allowed.holds(item):
                shown = f"{prefix}{key}={value}" if len(items) == 1 else f"{prefix}{key}={list(items)}"
                raise ConfigError(f"{shown} must be {allowed}")


def check_groups(cfg: DictConfig, schema: type, config_dir: Path = CONFIG_DIR) -> None:
    """A group option meant for another recipe (``model=roberta_base`` in the GPT recipe) is named
    as such, before its interpolations fail on keys this recipe does not have."""
    for name, kind in typing.get_type_hints(schema).items():
        node = cfg.get(name) if isinstance(cfg, DictConfig) else None
        if not (is_dataclass(kind) and isinstance(node, DictConfig)):
            continue
        known = {f.name for f in fields(kind)}
        extra = set(node.keys()) - known
        if not extra:
            continue
        files = [*(Path(config_dir) / name).glob("*.yaml"), *Path(config_dir).glob(f"*/{name}/*.yaml")]
        keys = [(p.stem, set(yaml.safe_load(p.read_text()) or {}) - {"defaults"}) for p in files]
        if not any(extra <= k for _, k in keys):
            continue  # a misspelt key, not another recipe's option: the schema names it
        options = sorted({name for name, k in keys if k <= known})
        extra = sorted(extra)
        raise ConfigError(
            f"{name}: this recipe's {name} has no {', '.join(extra)}, so the {name} "
            f"chosen is for another recipe; choose one of: {', '.join(options) or '(none found)'}"
        )


def validate(cfg: DictConfig, schema: type) -> DictConfig:
    """``cfg`` resolved and merged into ``schema`` (a recipe's ``SCHEMA``): every key known, typed,
    set, one of its choices and within its range (the engine's ``RANGES`` and the schema's)."""
    check_groups(cfg, schema)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain.pop("hydra", None)
        typed = OmegaConf.merge(OmegaConf.structured(schema), plain)
        missing = sorted(OmegaConf.missing_keys(typed))
    except OmegaConfBaseException as err:
        raise ConfigError(error_line(err, "invalid config")) from None
    if missing:
        raise ConfigError(f"config keys without a value: {', '.join(missing)}")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(typed, key, default="<absent>")
        if value != "<absent>" and value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, allowed))}")
    check_ranges(typed, {**RANGES, **getattr(schema, "RANGES", {})})
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
    check_ranges(settings, OPTIMIZER_RANGES, prefix="optimizer.")
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

    main, search = hydra_search(config_name, config_dir)
    with initialize_config_dir(config_dir=str(main), version_base=None):
        return hydra_compose(config_name=config_name, overrides=[*(overrides or []), *search])
