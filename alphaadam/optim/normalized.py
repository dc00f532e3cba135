"""What SinkGD and SWAN share: a stateless normalised step on the attention and MLP matrices, and
AdamW on everything else (embeddings, LM/classifier heads, norms, biases), as their papers train.

Param groups carry ``normalized``: True for the matrices, whose step is
``θ <- θ (1 - η α wd) - η α · direction(g)`` with no state at all (α = ``lr_ratio``, so one schedule
scales both kinds of group); False for the rest, which get AdamW with bias correction (torch's
``AdamW`` rule, tested equal). Subclasses define ``direction``.
"""

from __future__ import annotations

import math

import torch

from alphaadam.optim.base import state_dtype
from alphaadam.optim.common import (
    KeepsStateDtypes,
    check_adam_group,
    check_number,
    evaluate_closure,
    param_name,
    params_with_grad,
)
from alphaadam.optim.families import lowrank_param_groups, lowrank_targets
from alphaadam.optim.param_groups import NamedParameters
from alphaadam.optim.sharding import refuse_dtensors

WHOLE_MATRICES = "its row and column normalisations need whole matrices"


class NormalizedMatrixAdam(KeepsStateDtypes, torch.optim.Optimizer):
    """Stateless ``direction(g)`` steps on groups with ``normalized=True``, AdamW on the others."""

    def __init__(self, params, lr, betas, eps, weight_decay, lr_ratio, normalized, **options):
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            lr_ratio=lr_ratio,
            normalized=normalized,
            **options,
        )
        super().__init__(params, defaults)
        every = (p for group in self.param_groups for p in group["params"])
        refuse_dtensors(every, type(self).__name__, WHOLE_MATRICES)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_adam_group(group)
        check_number("lr_ratio", group["lr_ratio"])
        self._validate_group(group)
        for i, p in enumerate(group["params"]):
            if not p.is_floating_point():
                raise ValueError(f"{type(self).__name__} needs floating-point parameters, got {p.dtype}")
            if group["normalized"] and p.dim() != 2:
                raise ValueError(
                    f"{type(self).__name__} normalises matrices only, but {param_name(group, i)} has shape "
                    f"{tuple(p.shape)}; put it in a group with normalized=False (AdamW)"
                )

    def _validate_group(self, group: dict) -> None:
        """Checks of the subclass's own options."""

    def direction(self, g: torch.Tensor, group: dict) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group, _, p in params_with_grad(self):
            if group["normalized"]:
                self._normalized_step(p, group)
            else:
                self._adamw_step(p, group)
        return loss

    def _normalized_step(self, p: torch.Tensor, group: dict) -> None:
        lr = group["lr"] * group["lr_ratio"]
        update = self.direction(p.grad.to(state_dtype(p)), group)
        if group["weight_decay"]:
            p.mul_(1 - lr * group["weight_decay"])
        p.add_(update.to(p.dtype), alpha=-lr)

    def _adamw_step(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            dtype = state_dtype(p)
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g = p.grad.to(m.dtype)
        state["step"] += 1
        t = state["step"].item()
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
        p.add_((m / denom).to(p.dtype), alpha=-group["lr"] / (1 - beta1**t))


def build_for_model(
    cls: type[NormalizedMatrixAdam],
    params: NamedParameters,
    *,
    weight_decay: float,
    weight_decay_rule: str,
    family: str | None,
    targets: list[str] | None,
    **options,
) -> NormalizedMatrixAdam:
    """``cls`` with groups of the attention and MLP matrices of the model family (``normalized=True``;
    ``targets``, regular expressions, replaces the family's choice) and of everything else (AdamW),
    each split by weight decay."""
    refuse_dtensors((p for _, p in params.named), cls.__name__, WHOLE_MATRICES)  # before family detection
    chosen = lowrank_targets(params, family, targets)
    groups = lowrank_param_groups(
        params, chosen, weight_decay, weight_decay_rule, {"normalized": True}, {"normalized": False}
    )
    return cls(groups, weight_decay=weight_decay, **options)
