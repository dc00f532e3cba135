"""AlphaAdam and Cautious AdamW: AdamW with a momentum-gradient mask (docs/algorithm.md)."""

from __future__ import annotations

import torch

from alphaadam.optim import kernels, multitensor, native
from alphaadam.optim.base import Bucket, MaskedOptimizer, state_dtype
from alphaadam.optim.common import check_betas, check_number


def adam_directions(
    grads: list,
    exp_avgs: list,
    exp_avg_sqs: list,
    beta1: float,
    beta2: float,
    eps: float,
    inv_bc1: float,
    inv_bc2_sqrt: float,
    *,
    mask: str,
    strict: bool,
    norm: str,
    need_norms: bool,
):
    """First pass over a bucket: update the moments; return ``(M * u, u, statistics table)``.

    ``u`` is torch.optim.AdamW's bias-corrected direction. The async mask compares the momentum from
    before this step with the gradient; the sync mask (Cautious) compares the updated momentum.
    """
    g = multitensor.in_dtype_of(grads, exp_avgs)
    keep = multitensor.sign_mask(exp_avgs, g, strict) if mask == "async" else None
    torch._foreach_lerp_(exp_avgs, g, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, g, g, value=1 - beta2)
    if mask == "sync":
        keep = multitensor.sign_mask(exp_avgs, g, strict)
    u = adam_unmasked_directions(exp_avgs, exp_avg_sqs, eps, inv_bc1, inv_bc2_sqrt)
    directions, table = multitensor.masked_statistics(u, keep, norm, need_norms)
    return directions, u, table


def adam_unmasked_directions(exp_avgs: list, exp_avg_sqs: list, eps, inv_bc1, inv_bc2_sqrt) -> list:
    """``u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)`` for a list, from updated moments."""
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_mul_(denom, inv_bc2_sqrt)
    torch._foreach_add_(denom, eps)
    u = torch._foreach_mul(exp_avgs, inv_bc1)
    torch._foreach_div_(u, denom)
    return u


class AlphaAdam(MaskedOptimizer):
    r"""AdamW with an asynchronous momentum mask and a dynamic compensation factor alpha.

    Per tensor and step (docs/algorithm.md): decoupled weight decay ``theta *= 1 - lr * wd``; mask
    ``M = 1[m_{t-1} * g > 0]``; Adam moments and bias-corrected direction ``u``; if ``M`` is empty the
    unmasked step (``empty_mask="full"``) or none (``"skip"``); ``alpha = ||u||_p / ||M * u||_p``;
    ``theta -= lr * alpha * (M * u)``.

    Args:
        mask: ``"async"`` (AlphaAdam: momentum before this step), ``"sync"`` (Cautious: updated
            momentum) or ``"none"``.
        compensation: ``"norm_ratio"`` (dynamic alpha), ``"cautious_mean"`` (``1 / max(mean M, 1e-3)``),
            ``"cautious_nnz"`` (``numel / (sum M + 1)``) or ``"none"``.
        alpha_norm: the ``p`` of the norm ratio (2 in the paper; ``float("inf")`` allowed).
        alpha_max: optional upper clamp on alpha.
        mask_strict: ``>`` (default) or ``>=`` in the mask's sign test.
        empty_mask: what a step with an all-zero mask does: ``"full"`` (the AdamW step, alpha = 1) or
            ``"skip"`` (weight decay only).
        backend: ``"auto"``, ``"native"``, ``"compile"`` or ``"eager"`` (see
            :mod:`alphaadam.optim.kernels`). On CPU, ``"auto"`` runs fp32/fp64 tensors through the C
            kernels of :mod:`alphaadam.optim.native` (two calls per step for all of them) and every
            other tensor (CUDA, bf16/fp16, FSDP2 shards) through multi-tensor ``_foreach`` ops.

    ``step()`` consumes the gradients: afterwards ``p.grad`` holds the masked direction ``M * u``
    on the C path and is left as it was otherwise (call ``zero_grad()`` as usual). Parameters in
    bf16/fp16 keep fp32 moments. The step never waits for the device. Under FSDP2 each rank works on
    its shards and the whole-tensor sums are all-reduced once per step (see docs/distributed.md).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
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
            betas=tuple(betas),
            eps=eps,
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
        check_number("eps", group["eps"])
        check_betas(group["betas"])

    def _init_state(self, p: torch.Tensor, state: dict) -> None:
        dtype = state_dtype(p)
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)

    def _bucket_kinds(self, entries: list) -> list[tuple[int]]:
        if not entries:
            return []
        steps = [state["step"] for _, _, state in entries]
        torch._foreach_add_(steps, 1.0)  # one call for every tensor's counter, as torch.optim.AdamW does
        return [(int(t),) for t in torch.stack(steps).tolist()]  # one read of the (CPU) counters

    def _takes_native(self, group: dict, p: torch.Tensor, state: dict) -> bool:
        tensors = (p, p.grad, state["exp_avg"], state["exp_avg_sq"])
        # native_enabled builds the C kernels on first use, so it is asked last.
        return group["alpha_norm"] == 2 and native.applies(*tensors) and kernels.native_enabled(self.backend)

    def _rule(self, bucket: Bucket) -> tuple[str, str]:
        group, (t,) = bucket.group, bucket.kind
        # m_0 = 0, so at a tensor's first step the strict async mask is empty by construction:
        # the empty-mask rule is known without looking, and "full" is exactly an AdamW step.
        if t == 1 and group["mask"] == "async" and group["mask_strict"] and group["empty_mask"] == "full":
            return "none", "none"
        return super()._rule(bucket)

    def _first_pass(self, bucket: Bucket) -> torch.Tensor:
        group, (t,) = bucket.group, bucket.kind
        values = bucket.scratch["values"] = self._step_values(group, t)
        grads = bucket.locals("grad")
        exp_avgs, exp_avg_sqs = bucket.locals("exp_avg"), bucket.locals("exp_avg_sq")
        if bucket.native:
            row = [values[name] for name in native.HYPER_PARAMETERS]
            hyper = torch.tensor([row] * len(grads), dtype=torch.float64)
            mask = self._rule(bucket)[0]
            full, masked, kept = native.adam_direction_pass(
                grads, exp_avgs, exp_avg_sqs, hyper, mask=mask, strict=group["mask_strict"]
            )
            numel = torch.tensor([g.numel() for g in grads], dtype=torch.float64)
            return torch.stack([full, masked, kept, numel], dim=1)
        # The values that change from step to step enter as 0-d tensors: no recompiles, no syncs.
        varying = {k: values[k] for k in ("inv_bc1", "inv_bc2_sqrt", "lr", "decay")}
        scalars = bucket.scratch["scalars"] = self._scalars(varying, exp_avgs[0].dtype, exp_avgs[0].device)
        return self._multitensor_first_pass(
            bucket,
            adam_directions,
            grads,
            exp_avgs,
            exp_avg_sqs,
            values["beta1"],
            values["beta2"],
            values["eps"],
            scalars["inv_bc1"],
            scalars["inv_bc2_sqrt"],
        )

    def _second_pass(self, bucket: Bucket, alpha: torch.Tensor, take_unmasked: torch.Tensor) -> None:
        values, params = bucket.scratch["values"], bucket.locals()
        lr, decay = values["lr"], values["decay"]
        if not bucket.native:
            scalars = bucket.scratch["scalars"]
            decay_or_none = scalars["decay"] if bucket.group["weight_decay"] != 0 else None
            self._multitensor_second_pass(bucket, alpha * scalars["lr"], take_unmasked, decay_or_none)
            return
        grads = bucket.locals("grad")
        n = len(params)
        native.apply_update(params, grads, lr * alpha, torch.full((n,), decay, dtype=torch.float64))
        empty = take_unmasked.nonzero().flatten().tolist()  # CPU tensors: no device to wait for
        if empty:
            # Weight decay is applied and the masked direction was zero: add the unmasked step.
            chosen = [params[i] for i in empty]
            exp_avgs, exp_avg_sqs = bucket.locals("exp_avg"), bucket.locals("exp_avg_sq")
            u = adam_unmasked_directions(
                [exp_avgs[i] for i in empty],
                [exp_avg_sqs[i] for i in empty],
                values["eps"],
                values["inv_bc1"],
                values["inv_bc2_sqrt"],
            )
            torch._foreach_add_(chosen, u, alpha=-lr)

    @staticmethod
    def _step_values(group: dict, t: int) -> dict[str, float]:
        """The step's hyper-parameters, shared by every tensor of ``group`` at step ``t``."""
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        return dict(
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            inv_bc1=1.0 / (1.0 - beta1**t),
            inv_bc2_sqrt=(1.0 - beta2**t) ** -0.5,
            lr=lr,
            decay=1.0 - lr * group["weight_decay"],
        )


class CAdamW(AlphaAdam):
    """Cautious AdamW (Liang et al. 2024): AlphaAdam's code with the synchronous mask.

    ``normalization="mean"`` rescales by ``1 / max(mean M, 1e-3)`` (C-Optim since 2025-01);
    ``"nnz"`` by ``numel / (sum M + 1)`` (the Nov-2024 version). As in C-Optim, an empty mask makes
    no update (``empty_mask="skip"``).
    """

    NORMALIZATIONS = {"mean": "cautious_mean", "nnz": "cautious_nnz"}

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        normalization: str = "mean",
        backend: str | None = None,
    ):
        if normalization not in self.NORMALIZATIONS:
            raise ValueError(f"normalization={normalization!r} is not one of {tuple(self.NORMALIZATIONS)}")
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            mask="sync",
            compensation=self.NORMALIZATIONS[normalization],
            empty_mask="skip",
            backend=backend,
        )
