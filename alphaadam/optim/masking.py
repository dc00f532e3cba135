"""The mask and compensation rules shared by every masked optimizer (docs/algorithm.md, steps 2, 5-7).

A masked optimizer's step has two passes over its tensors, with whole-tensor sums between them:

1. a *direction pass*, specific to the base optimizer (Adam, SGD with momentum), which updates the
   optimizer state, computes the update direction ``u`` and the mask ``M`` from the momentum, and
   measures ``sum |u|^p``, ``sum |M u|^p`` and ``sum M`` per tensor (a statistics table);
2. :func:`step_factors`, shared by all of them, which turns that table (summed over the shards of
   FSDP2 parameters) into alpha and the empty-mask decision, followed by the update
   ``theta <- theta * decay - lr * alpha * (M * u)``.

The passes run in C for CPU fp32/fp64 tensors (:mod:`alphaadam.optim.native`) and as multi-tensor
``_foreach`` ops for everything else (:mod:`alphaadam.optim.multitensor`).
"""

from __future__ import annotations

import math

import torch

MASKS = ("async", "sync", "none")
COMPENSATIONS = ("norm_ratio", "cautious_mean", "cautious_nnz", "none")
EMPTY_MASK_RULES = ("full", "skip")

# Cautious optimizers clamp the kept fraction from below so that an almost empty mask cannot blow
# the step up (C-Optim since 2025-01; docs/algorithm.md, "The mask framework").
CAUTIOUS_MIN_MEAN = 1e-3


def effective_compensation(mask: str, compensation: str) -> str:
    """With no mask, M = 1 and the norm ratio is 1 by definition: skip computing it."""
    return "none" if mask == "none" and compensation == "norm_ratio" else compensation


def static_float(value: float | None) -> str:
    """A constant float option (norm order, alpha clamp) as a string: compiled kernels treat float
    arguments as symbolic inputs but specialise on strings."""
    return "none" if value is None else repr(float(value))


def compensation_factor(
    full: torch.Tensor | None,
    masked: torch.Tensor | None,
    kept: torch.Tensor,
    numel: int,
    compensation: str,
    norm: str,
    alpha_max: str,
) -> torch.Tensor | float:
    """The scale applied to the masked direction (docs/algorithm.md, step 6 and "The mask framework").

    ``full`` and ``masked`` are ``sum |u|^p`` and ``sum |M * u|^p`` (only read for ``"norm_ratio"``),
    ``kept`` is ``sum(M)``. Counts are turned into factors in float64, as the reference does.
    ``norm`` and ``alpha_max`` come from :func:`static_float`.
    """
    if compensation == "norm_ratio":
        p = float(norm)
        ratio = full / torch.where(masked > 0, masked, 1.0)
        alpha = ratio if math.isinf(p) else (ratio.sqrt() if p == 2 else ratio.pow(1.0 / p))
        # alpha >= 1 exactly; the clamp absorbs the rounding of two differently ordered sums, and an
        # empty (or underflowed) mask leaves nothing to rescale: the empty-mask rule decides that step.
        alpha = torch.where(masked > 0, torch.clamp(alpha, min=1.0), 1.0)
    elif compensation == "cautious_mean":
        alpha = numel / torch.clamp(kept.double(), min=CAUTIOUS_MIN_MEAN * numel)
    elif compensation == "cautious_nnz":
        alpha = numel / (kept.double() + 1.0)
    else:
        return 1.0
    if alpha_max != "none":
        alpha = torch.clamp(alpha, max=float(alpha_max))
    return alpha


def step_factors(
    table: torch.Tensor, compensation: str, norm: str, alpha_max: str, empty_full: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tensor (alpha, take-the-unmasked-step, mask density) vectors from a statistics table.

    ``table`` has one row per tensor: ``sum |u|^p``, ``sum |M u|^p``, ``sum M``, numel (global sums
    for sharded tensors). This is the one place of the empty-mask rule: a tensor whose mask is empty
    reports alpha = 1 and, with ``empty_mask="full"`` (``empty_full``), takes the unmasked step.
    """
    full, masked, kept, numel = table.unbind(1)
    factor = compensation_factor(full, masked, kept, numel, compensation, norm, alpha_max)
    alpha = torch.as_tensor(factor, dtype=torch.float64, device=table.device).expand_as(full)
    empty = kept == 0
    alpha = torch.where(empty, 1.0, alpha)
    return alpha, empty & empty_full, kept / numel


def validate_mask_options(
    mask: str,
    compensation: str,
    empty_mask: str,
    alpha_norm: float,
    alpha_max: float | None,
    mask_strict: bool,
) -> None:
    """Raise ValueError naming the offending argument."""
    if mask not in MASKS:
        raise ValueError(f"mask={mask!r} is not one of {MASKS}")
    if compensation not in COMPENSATIONS:
        raise ValueError(f"compensation={compensation!r} is not one of {COMPENSATIONS}")
    if empty_mask not in EMPTY_MASK_RULES:
        raise ValueError(f"empty_mask={empty_mask!r} is not one of {EMPTY_MASK_RULES}")
    if not (isinstance(alpha_norm, (int, float)) and alpha_norm > 0):
        raise ValueError(f"alpha_norm={alpha_norm!r} must be a positive number (2 in the paper; inf allowed)")
    if alpha_max is not None and not alpha_max >= 1:
        raise ValueError(f"alpha_max={alpha_max!r} must be None or >= 1 (alpha is never below 1)")
    if not isinstance(mask_strict, bool):
        raise ValueError(f"mask_strict={mask_strict!r} must be True or False")
