"""AlphaSGD: the mask and compensation of AlphaAdam on SGD with momentum (the paper's "framework")."""

from __future__ import annotations

import torch

from alphaadam.optim import kernels
from alphaadam.optim.base import MaskedOptimizer, check_number
from alphaadam.optim.masking import (
    agreement,
    apply_update,
    compensation_factor,
    effective_compensation,
    norm_key,
    norm_power,
)


def _sgd_direction(param, grad, buf, momentum, dampening, weight_decay, first: bool, nesterov: bool):
    """torch.optim.SGD's direction: returns (d_p, new momentum buffer, update direction u)."""
    d_p = grad if weight_decay == 0 else grad + weight_decay * param
    if momentum == 0:
        return d_p, None, d_p
    new_buf = d_p if first else buf * momentum + (1 - dampening) * d_p
    return d_p, new_buf, (d_p + momentum * new_buf if nesterov else new_buf)


def _sgd_mask(d_p, buf, new_buf, mask: str, strict: bool):
    # The async mask compares the buffer from before this step (zero at the first step) with the
    # gradient that enters it (weight-decay term included); the sync mask the updated buffer.
    if mask == "async":
        return agreement(buf, d_p, strict)
    if mask == "sync":
        return agreement(new_buf, d_p, strict)
    return torch.ones_like(d_p, dtype=torch.bool)


def sgd_norms_pass(
    param, grad, buf, momentum, dampening, weight_decay, *, first, nesterov, mask, strict, norm, need_norms
):
    """Read-only first pass: ``sum |u|^p``, ``sum |M u|^p`` and ``sum M``."""
    d_p, new_buf, u = _sgd_direction(param, grad, buf, momentum, dampening, weight_decay, first, nesterov)
    keep = _sgd_mask(d_p, buf, new_buf, mask, strict)
    kept = keep.sum()
    if not need_norms:
        return None, None, kept
    return norm_power(u, norm), norm_power(torch.where(keep, u, 0), norm), kept


def sgd_update_pass(
    param,
    grad,
    buf,
    lr,
    momentum,
    dampening,
    weight_decay,
    full,
    masked,
    kept,
    *,
    first,
    nesterov,
    mask,
    strict,
    compensation,
    norm,
    alpha_max,
    empty_full,
):
    """Second pass: recompute the direction (SGD is cheap), compensate, update buffer and parameter."""
    d_p, new_buf, u = _sgd_direction(param, grad, buf, momentum, dampening, weight_decay, first, nesterov)
    keep = _sgd_mask(d_p, buf, new_buf, mask, strict)
    alpha = torch.as_tensor(
        compensation_factor(full, masked, kept, u.numel(), compensation, norm, alpha_max),
        dtype=torch.float64,
        device=u.device,
    )
    if empty_full:  # an empty mask takes the unmasked step with alpha = 1
        empty = kept == 0
        keep = keep | empty
        alpha = torch.where(empty, 1.0, alpha)
    if new_buf is not None:
        buf.copy_(new_buf)
    apply_update(param, torch.where(keep, u, 0), lr * alpha, 1.0)
    return alpha.float()


class AlphaSGD(MaskedOptimizer):
    """SGD with momentum (torch.optim.SGD's conventions, coupled weight decay) plus the momentum mask.

    With ``mask="none", compensation="none"`` it equals ``torch.optim.SGD``. The async mask is
    ``1[buf_{t-1} * d_p > 0]`` where ``d_p`` is the gradient plus the weight-decay term; the update is
    ``p -= lr * alpha * (M * u)`` with ``u`` the momentum buffer (or the Nesterov direction).
    SGD is memory-bound, so the second pass recomputes the direction and ``p.grad`` is left intact.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        mask: str = "async",
        compensation: str = "norm_ratio",
        alpha_norm: float = 2,
        alpha_max: float | None = None,
        mask_strict: bool = True,
        empty_mask: str = "full",
        backend: str | None = None,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            mask=mask,
            compensation=compensation,
            alpha_norm=alpha_norm,
            alpha_max=alpha_max,
            mask_strict=mask_strict,
            empty_mask=empty_mask,
        )
        super().__init__(params, defaults, backend)

    def _validate_group(self, group: dict) -> None:
        super()._validate_group(group)
        check_number("momentum", group["momentum"], 0.0, 1.0)
        check_number("dampening", group["dampening"], 0.0, 1.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")
        if group["momentum"] == 0 and group["mask"] != "none":
            raise ValueError(
                f"mask={group['mask']!r} compares the momentum with the gradient: it needs momentum > 0"
            )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, p in self._params_with_grad():
            state = self.state[p]
            first = "momentum_buffer" not in state
            if first and group["momentum"] != 0:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buf = state.get("momentum_buffer")
            compensation = effective_compensation(group["mask"], group["compensation"])
            options = dict(
                first=first, nesterov=group["nesterov"], mask=group["mask"], strict=group["mask_strict"]
            )
            hyper = (group["momentum"], group["dampening"], group["weight_decay"])
            full, masked, kept = kernels.run(
                sgd_norms_pass,
                self.backend,
                p,
                p.grad,
                buf,
                *hyper,
                norm=norm_key(group["alpha_norm"]),
                need_norms=compensation == "norm_ratio",
                **options,
            )
            alpha = kernels.run(
                sgd_update_pass,
                self.backend,
                p,
                p.grad,
                buf,
                group["lr"],
                *hyper,
                full,
                masked,
                kept,
                compensation=compensation,
                norm=norm_key(group["alpha_norm"]),
                alpha_max=group["alpha_max"],
                empty_full=group["empty_mask"] == "full" and group["mask"] != "none",
                **options,
            )
            self._record(state, alpha, kept, p.numel())
        return loss
