"""Optimizer registry: a name -> builder(named parameters, **hyper-parameters) table.

Builders receive :class:`NamedParameters` (names and, when given, the model) because several
optimizers partition parameters by name or module (weight-decay rules, GaLore's target matrices,
Adam-mini's blocks) and the masked optimizers report statistics per parameter name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from alphaadam.optim.param_groups import NamedParameters


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    build: Callable[..., torch.optim.Optimizer]
    accepts: frozenset[str]
    summary: str
    source: str  # where the implementation comes from: "torch", "in-project", or a PyPI package
    paper: str


_REGISTRY: dict[str, OptimizerEntry] = {}


def _keyword_parameters(fn: Callable, skip: Iterable[str] = ()) -> frozenset[str]:
    sig = inspect.signature(fn)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(
        n for n, p in sig.parameters.items() if p.kind in kinds and n not in {"self", "params", *skip}
    )


def register(name: str, *, summary: str, source: str, paper: str = ""):
    """Decorator for a builder ``fn(params: NamedParameters, **hparams)`` with explicit keywords."""

    def decorate(fn):
        if name in _REGISTRY:
            raise ValueError(f"optimizer {name!r} is registered twice")
        _REGISTRY[name] = OptimizerEntry(name, fn, _keyword_parameters(fn), summary, source, paper)
        return fn

    return decorate


def register_class(
    name: str,
    cls: type[torch.optim.Optimizer],
    *,
    summary: str,
    source: str,
    paper: str = "",
    fixed: dict | None = None,
    weight_decay_rule: str = "ndim",
) -> None:
    """Register an optimizer class used with the standard two weight-decay groups.

    ``fixed`` holds constructor arguments that the name stands for (a preset) and that callers may
    therefore not override.
    """
    fixed = dict(fixed or {})

    def build(
        params: NamedParameters,
        *,
        weight_decay: float = 0.0,
        weight_decay_rule: str = weight_decay_rule,
        **hparams,
    ) -> torch.optim.Optimizer:
        groups = params.weight_decay_groups(weight_decay, weight_decay_rule)
        return cls(groups, weight_decay=weight_decay, **fixed, **hparams)

    accepts = _keyword_parameters(cls.__init__, skip=fixed) | {"weight_decay_rule"}
    if name in _REGISTRY:
        raise ValueError(f"optimizer {name!r} is registered twice")
    _REGISTRY[name] = OptimizerEntry(name, build, accepts, summary, source, paper)


def available_optimizers() -> list[str]:
    """Registered optimizer names, sorted."""
    return sorted(_REGISTRY)


def optimizer_entry(name: str) -> OptimizerEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; available: {', '.join(available_optimizers())}"
        ) from None


def build_optimizer(
    model_or_named_parameters: nn.Module | Iterable[tuple[str, torch.Tensor]], name: str, **hparams
) -> torch.optim.Optimizer:
    """Build the optimizer registered as ``name`` for a model or its ``named_parameters()``.

    Hyper-parameters are the optimizer's keyword arguments plus ``weight_decay_rule`` ("ndim",
    "bias_and_norm" or "all"; see :mod:`alphaadam.optim.param_groups`).
    """
    entry = optimizer_entry(name)
    unknown = sorted(set(hparams) - entry.accepts)
    if unknown:
        raise ValueError(
            f"optimizer {name!r} does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(entry.accepts))}"
        )
    return entry.build(NamedParameters.of(model_or_named_parameters), **hparams)
