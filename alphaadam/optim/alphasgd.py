"""AlphaSGD: the mask and compensation of AlphaAdam on SGD with momentum (the paper's "framework")."""

from __future__ import annotations

import torch

from alphaadam.optim import kernels, multitensor, native
from alphaadam.optim.base import Bucket, MaskedOptimizer
from alphaadam.optim.common import check_number


def sgd_directions(
    params: list,
    grads: list,
    bufs: list | None,
    momentum: float,
    dampening: float,
    weight_decay: float,
    *,
    first: bool,
    nesterov: bool,
    mask: str,
    strict: bool,
    norm: str,
    need_norms: bool,
):
    """First pass over a bucket: torch.optim.SGD's direction ``u`` (the momentum buffers updated in
    place); return ``(M * u, u, statistics table)``.

    The async mask compares the buffer from before this step (zero at the first step) with the
    gradient that enters it (weight-decay term included); the sync mask the updated buffer.
    """
    d_p = torch._foreach_add(grads, params, alpha=weight_decay) if weight_decay != 0 else grads
    keep = multitensor.sign_mask(bufs, d_p, strict) if mask == "async" else None
    if bufs is None:
        u = d_p
    else:
        if first:
            torch._foreach_copy_(bufs, d_p)
        else:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, d_p, alpha=1 - dampening)
        u = torch._foreach_add(d_p, bufs, alpha=momentum) if nesterov else bufs
    if mask == "sync":
        keep = multitensor.sign_mask(bufs, d_p, strict)
    if keep is None and (u is grads or u is bufs):
        u = torch._foreach_mul(u, 1.0)  # the second pass writes into the directions
    directions, table = multitensor.masked_statistics(u, keep, norm, need_norms)
    return directions, u, table


class AlphaSGD(MaskedOptimizer):
    """SGD with momentum (torch.optim.SGD's conventions, coupled weight decay) plus the momentum mask.

    With ``mask="none", compensation="none"`` it equals ``torch.optim.SGD``. The async mask is
    ``1[buf_{t-1} * d_p > 0]`` where ``d_p`` is the gradient plus the weight-decay term; the update is
    ``p -= lr * alpha * (M * u)`` with ``u`` the momentum buffer (or the Nesterov direction).
    On CPU, ``backend="auto"`` runs fp32/fp64 tensors with momentum and without Nesterov through the
    C kernels of :mod:`alphaadam.optim.native` (two calls per step for all of them), which, as
    AlphaAdam's, leave ``M * u`` in ``p.grad``; every other tensor runs as multi-tensor ops, which
    leave ``p.grad`` intact.
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

    def _init_state(self, p: torch.Tensor, state: dict) -> None:
        pass  # the momentum buffer is made at the first step, below

    def _bucket_kinds(self, entries: list) -> list[tuple[bool]]:
        kinds = []
        for group, p, state in entries:
            first = "momentum_buffer" not in state
            if first and group["momentum"] != 0:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            kinds.append((first,))
        return kinds

    def _takes_native(self, group: dict, p: torch.Tensor, state: dict) -> bool:
        # The kernels' direction is the buffer itself; Nesterov's also needs d_p after pass 1.
        if group["momentum"] == 0 or group["nesterov"] or group["alpha_norm"] != 2:
            return False
        # native_enabled builds the C kernels on first use, so it is asked last.
        return native.applies(p, p.grad, state["momentum_buffer"]) and kernels.native_enabled(self.backend)

    def _first_pass(self, bucket: Bucket) -> torch.Tensor:
        group, (first,) = bucket.group, bucket.kind
        if bucket.native:
            # At the first step the buffer (zeros) becomes d_p: buffer * 0 + 1 * d_p.
            row = dict(
                momentum=0.0 if first else group["momentum"],
                grad_weight=1.0 if first else 1.0 - group["dampening"],
                weight_decay=group["weight_decay"],
            )
            columns = [[row[name] for name in native.SGD_COLUMNS]] * len(bucket.params)
            table = torch.tensor(columns, dtype=torch.float64)
            full, masked, kept = native.sgd_direction_pass(
                bucket.params,
                [p.grad for p in bucket.params],
                bucket.locals("momentum_buffer"),
                table,
                mask=self._rule(bucket)[0],
                strict=group["mask_strict"],
                weight_decay=group["weight_decay"] != 0,
            )
            numel = torch.tensor([p.numel() for p in bucket.params], dtype=torch.float64)
            return torch.stack([full, masked, kept, numel], dim=1)
        return self._multitensor_first_pass(
            bucket,
            sgd_directions,
            bucket.locals(),
            bucket.locals("grad"),
            bucket.locals("momentum_buffer") if group["momentum"] != 0 else None,
            group["momentum"],
            group["dampening"],
            group["weight_decay"],
            first=first,
            nesterov=group["nesterov"],
        )

    def _second_pass(self, bucket: Bucket, alpha: torch.Tensor, take_unmasked: torch.Tensor) -> None:
        lr = bucket.group["lr"]
        if bucket.native:
            params = bucket.params
            ones = torch.ones(len(params), dtype=torch.float64)
            native.apply_update(params, [p.grad for p in params], lr * alpha, ones)
            empty = take_unmasked.nonzero().flatten().tolist()  # CPU tensors: no device to wait for
            if empty:
                # The masked direction was zero there: take the unmasked one, the buffer.
                buffers = bucket.locals("momentum_buffer")
                torch._foreach_add_([params[i] for i in empty], [buffers[i] for i in empty], alpha=-lr)
            return
        (lr,) = self._scalars({"lr": lr}, torch.float64, bucket.params[0].device).values()
        self._multitensor_second_pass(bucket, alpha * lr, take_unmasked, None)
