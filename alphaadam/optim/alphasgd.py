"""AlphaSGD: the mask and compensation of AlphaAdam on SGD with momentum (the paper's "framework")."""

from __future__ import annotations

import torch

from alphaadam.optim import kernels, native
from alphaadam.optim.base import MaskedOptimizer
from alphaadam.optim.common import check_number, evaluate_closure, params_with_grad
from alphaadam.optim.masking import (
    agreement,
    apply_update,
    compensation_factor,
    effective_compensation,
    norm_power,
    static_float,
)


def _sgd_direction(
    param,
    grad,
    buf,
    momentum,
    dampening,
    weight_decay,
    first: bool,
    nesterov: bool,
    has_momentum: bool,
    has_weight_decay: bool,
):
    """torch.optim.SGD's direction: returns (d_p, new momentum buffer, update direction u)."""
    d_p = grad + weight_decay * param if has_weight_decay else grad
    if not has_momentum:
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
    param, grad, buf, momentum, dampening, weight_decay, *, flags, mask, strict, norm, need_norms
):
    """Read-only first pass: ``sum |u|^p``, ``sum |M u|^p`` and ``sum M``."""
    d_p, new_buf, u = _sgd_direction(param, grad, buf, momentum, dampening, weight_decay, *flags)
    keep = _sgd_mask(d_p, buf, new_buf, mask, strict)
    kept = keep.sum()
    if not need_norms:
        return None, None, kept
    return norm_power(u, norm), norm_power(torch.where(keep, u, 0), norm), kept


def sgd_update_pass(
    param,
    grad,
    buf,
    momentum,
    dampening,
    weight_decay,
    lr,
    full,
    masked,
    kept,
    *,
    flags,
    mask,
    strict,
    compensation,
    norm,
    alpha_max,
    empty_full,
):
    """Second pass: recompute the direction (SGD is cheap), compensate, update buffer and parameter.

    Returns (alpha, mask density) for the statistics.
    """
    d_p, new_buf, u = _sgd_direction(param, grad, buf, momentum, dampening, weight_decay, *flags)
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
    return alpha.float(), kept.float() / u.numel()


class AlphaSGD(MaskedOptimizer):
    """SGD with momentum (torch.optim.SGD's conventions, coupled weight decay) plus the momentum mask.

    With ``mask="none", compensation="none"`` it equals ``torch.optim.SGD``. The async mask is
    ``1[buf_{t-1} * d_p > 0]`` where ``d_p`` is the gradient plus the weight-decay term; the update is
    ``p -= lr * alpha * (M * u)`` with ``u`` the momentum buffer (or the Nesterov direction).
    SGD is memory-bound, so the second pass recomputes the direction and ``p.grad`` is left intact.
    On CPU, ``backend="auto"`` runs fp32/fp64 tensors with momentum through the C kernels of
    :mod:`alphaadam.optim.native` (two calls per step for all of them).
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
        loss = evaluate_closure(closure)
        scalars, batches = {}, {}
        for group, _, p in params_with_grad(self):
            state = self.state[p]
            has_momentum = group["momentum"] != 0
            first = "momentum_buffer" not in state
            if first and has_momentum:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            native_ok = has_momentum and native.applies(p, p.grad, state.get("momentum_buffer", p))
            if native_ok and group["alpha_norm"] == 2 and kernels.native_enabled(self.backend):
                self._add_to_native_batch(batches, group, p, first)  # C kernels, built on first use
                continue
            key = (id(group), p.dtype, p.device)
            if key not in scalars:
                values = {k: group[k] for k in ("momentum", "dampening", "weight_decay", "lr")}
                scalars[key] = tuple(self._scalars(values, p.dtype, p.device).values())
            *hyper, lr = scalars[key]
            tensors = (p, p.grad, state.get("momentum_buffer"), *hyper)
            compensation = effective_compensation(group["mask"], group["compensation"])
            options = dict(
                flags=(first, group["nesterov"], has_momentum, group["weight_decay"] != 0),
                mask=group["mask"],
                strict=group["mask_strict"],
                norm=static_float(group["alpha_norm"]),
            )
            full, masked, kept = kernels.run(
                sgd_norms_pass, self.backend, *tensors, need_norms=compensation == "norm_ratio", **options
            )
            state["alpha"], state["mask_density"] = kernels.run(
                sgd_update_pass,
                self.backend,
                *tensors,
                lr,
                full,
                masked,
                kept,
                compensation=compensation,
                alpha_max=static_float(group["alpha_max"]),
                empty_full=group["empty_mask"] == "full" and group["mask"] != "none",
                **options,
            )
        for rule, batch in batches.items():
            self._native_step(batch, *rule)
        return loss

    def _add_to_native_batch(self, batches: dict, group: dict, p: torch.Tensor, first: bool) -> None:
        """Queue ``p`` for the C kernels, with its row of :data:`native.SGD_COLUMNS`."""
        state, momentum, nesterov = self.state[p], group["momentum"], group["nesterov"]
        rule = (
            p.dtype,
            group["mask"],
            group["mask_strict"],
            effective_compensation(group["mask"], group["compensation"]),
            group["alpha_max"],
            group["empty_mask"] == "full" and group["mask"] != "none",
            group["weight_decay"] != 0,
        )
        batch = batches.setdefault(rule, {"params": [], "grads": [], "buffers": [], "rows": [], "lr": []})
        batch["params"].append(p)
        batch["grads"].append(p.grad)
        batch["buffers"].append(state["momentum_buffer"])
        # At the first step the buffer (zeros) becomes d_p: buffer * 0 + 1 * d_p.
        row = dict(
            momentum=0.0 if first else momentum,
            grad_weight=1.0 if first else 1.0 - group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=1.0 if nesterov else 0.0,
            buffer_weight=momentum if nesterov else 1.0,
            step=0.0,
            keep_all=0.0,
        )
        batch["rows"].append([row[name] for name in native.SGD_COLUMNS])
        batch["lr"].append(group["lr"])

    def _native_step(self, batch, dtype, mask, strict, compensation, alpha_max, empty_full, decay) -> None:
        """Both passes for tensors that share dtype and options, in two C calls."""
        del dtype  # part of the batch's key only
        tensors = batch["params"], batch["grads"], batch["buffers"]
        table = torch.tensor(batch["rows"], dtype=torch.float64)
        options = dict(mask=mask, strict=strict, weight_decay=decay)
        full, masked, kept = native.sgd_pass(*tensors, table, update=False, **options)
        numel = torch.tensor([p.numel() for p in batch["params"]], dtype=torch.float64)
        factor = compensation_factor(full, masked, kept, numel, compensation, "2.0", static_float(alpha_max))
        alpha = torch.as_tensor(factor, dtype=torch.float64).expand_as(full)
        if empty_full:  # an empty mask takes the unmasked step with alpha = 1
            empty = kept == 0
            alpha = torch.where(empty, 1.0, alpha)
            table[:, native.SGD_COLUMNS.index("keep_all")] = empty.double()
        table[:, native.SGD_COLUMNS.index("step")] = torch.tensor(batch["lr"], dtype=torch.float64) * alpha
        native.sgd_pass(*tensors, table, update=True, **options)
        density = kept / numel
        for p, a, d in zip(batch["params"], alpha.float().unbind(), density.float().unbind(), strict=True):
            self.state[p]["alpha"], self.state[p]["mask_density"] = a, d
