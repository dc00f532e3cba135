"""AlphaAdam and Cautious AdamW: AdamW with a momentum-gradient mask (docs/algorithm.md)."""

from __future__ import annotations

import torch

from alphaadam.optim import kernels, native
from alphaadam.optim.base import MaskedOptimizer, state_dtype
from alphaadam.optim.common import check_betas, check_number, evaluate_closure, params_with_grad
from alphaadam.optim.masking import (
    agreement,
    apply_masked_update,
    apply_update,
    compensation_factor,
    effective_compensation,
    keep_where,
    norm_power,
    static_float,
)


def adam_direction_pass(
    grad,
    exp_avg,
    exp_avg_sq,
    beta1,
    beta2,
    eps,
    inv_bc1,
    inv_bc2_sqrt,
    *,
    mask: str,
    strict: bool,
    norm: str,
    need_full: bool,
):
    """First pass of one tensor: update the moments, leave ``M * u`` in ``grad``; return ``sum |u|^p``.

    ``u`` is torch.optim.AdamW's bias-corrected direction. The async mask compares the momentum from
    before this step with the gradient; the sync mask (Cautious) compares the updated momentum.
    """
    g = grad.to(exp_avg.dtype)
    m = torch.lerp(exp_avg, g, 1 - beta1)
    v = exp_avg_sq * beta2 + (1 - beta2) * (g * g)
    u = (m * inv_bc1) / (v.sqrt() * inv_bc2_sqrt + eps)
    if mask == "async":
        keep = agreement(exp_avg, g, strict)
    elif mask == "sync":
        keep = agreement(m, g, strict)
    else:
        keep = torch.ones_like(u, dtype=torch.bool)
    masked = keep_where(keep, u)
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    grad.copy_(masked)
    # The norms must see the values the second pass sees, i.e. u rounded to the gradient's dtype.
    return norm_power(u.to(grad.dtype), norm) if need_full else None


def adam_unmasked_step(param, exp_avg, exp_avg_sq, lr, eps, inv_bc1, inv_bc2_sqrt):
    """``param -= lr * u`` from the updated moments: the unmasked step of the empty-mask rule
    (weight decay was already applied by the masked pass)."""
    u = (exp_avg * inv_bc1) / (exp_avg_sq.sqrt() * inv_bc2_sqrt + eps)
    apply_update(param, u, lr, 1.0)


# A row of :class:`NativeBatch`'s hyper-parameter table: pass 1's columns first, in the C file's order.
STEP_VALUES = (*native.HYPER_PARAMETERS, "lr", "decay")


class NativeBatch:
    """The tensors of one step that share dtype and options, gathered for :mod:`alphaadam.optim.native`."""

    def __init__(self):
        self.params, self.grads, self.exp_avgs, self.exp_avg_sqs = [], [], [], []
        self.states, self.hyper = [], []

    def add(self, tensors: tuple[torch.Tensor, ...], state: dict, hyper: tuple[float, ...]) -> None:
        param, grad, exp_avg, exp_avg_sq = tensors
        self.params.append(param)
        self.grads.append(grad)
        self.exp_avgs.append(exp_avg)
        self.exp_avg_sqs.append(exp_avg_sq)
        self.states.append(state)
        self.hyper.append(hyper)


def _flat(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """1-D views when every tensor is contiguous, so that one compiled graph serves every shape."""
    if all(t.is_contiguous() for t in tensors):
        return tuple(t.view(-1) for t in tensors)
    return tensors


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
            kernels of :mod:`alphaadam.optim.native` (two calls per step for all of them).

    ``step()`` consumes the gradients: afterwards ``p.grad`` holds the masked direction ``M * u``
    (call ``zero_grad()`` as usual). Parameters in bf16/fp16 keep fp32 moments. With
    ``empty_mask="full"`` a step after the first synchronises the device once to find empty masks.
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

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        scalars, maybe_empty, batches, steps = {}, [], {}, []
        for group, _, p in params_with_grad(self):
            state = self.state[p]
            if not state:
                self._init_state(p, state)
            steps.append(state["step"])
            t = int(state["step"]) + 1
            mask, compensation = group["mask"], group["compensation"]
            # m_0 = 0, so at a tensor's first step the strict async mask is empty by construction:
            # the empty-mask rule is known without looking, and "full" is exactly an AdamW step.
            first_full = t == 1 and mask == "async" and group["mask_strict"] and group["empty_mask"] == "full"
            if first_full:
                mask, compensation = "none", "none"
            compensation = effective_compensation(mask, compensation)
            tensors = (p, p.grad, state["exp_avg"], state["exp_avg_sq"])
            native_ok = group["alpha_norm"] == 2 and native.applies(*tensors)
            if native_ok and kernels.native_enabled(self.backend):  # builds the C kernels on first use
                rule = (mask, group["mask_strict"], compensation, group["alpha_max"], group["empty_mask"])
                batch = batches.setdefault((p.dtype, (*rule, first_full)), NativeBatch())
                key = (id(group), t)
                if key not in scalars:
                    values = self._step_values(group, t)
                    scalars[key] = tuple(values[name] for name in STEP_VALUES)
                batch.add(tensors, state, scalars[key])
                continue
            param, grad, exp_avg, exp_avg_sq = _flat(*tensors)
            key = (id(group), t, exp_avg.dtype, p.device)
            if key not in scalars:
                scalars[key] = self._step_scalars(group, t, exp_avg.dtype, p.device)
            s = scalars[key]
            norm = static_float(group["alpha_norm"])
            full = kernels.run(
                adam_direction_pass,
                self.backend,
                grad,
                exp_avg,
                exp_avg_sq,
                s["beta1"],
                s["beta2"],
                s["eps"],
                s["inv_bc1"],
                s["inv_bc2_sqrt"],
                mask=mask,
                strict=group["mask_strict"],
                norm=norm,
                need_full=compensation == "norm_ratio",
            )
            state["alpha"], state["mask_density"], kept = kernels.run(
                apply_masked_update,
                self.backend,
                param,
                grad,
                full,
                s["lr"],
                s["decay"],
                compensation=compensation,
                norm=norm,
                alpha_max=static_float(group["alpha_max"]),
            )
            if first_full:
                state["mask_density"] = torch.zeros_like(state["mask_density"])  # the true mask was empty
            elif mask != "none" and group["empty_mask"] == "full":
                maybe_empty.append((p, s, kept))
        if steps:
            torch._foreach_add_(steps, 1.0)  # one call for every tensor's counter, as torch.optim.AdamW does
        for (_, rule), batch in batches.items():
            self._native_step(batch, *rule)
        self._apply_empty_mask_rule(maybe_empty)
        return loss

    @staticmethod
    def _native_step(batch, mask, strict, compensation, alpha_max, empty_mask, first_full) -> None:
        """Both passes for a batch of tensors that share dtype and options, in two C calls."""
        hyper = torch.tensor(batch.hyper, dtype=torch.float64)
        column = dict(zip(STEP_VALUES, hyper.unbind(1), strict=True))
        full, masked, kept = native.adam_direction_pass(
            batch.grads,
            batch.exp_avgs,
            batch.exp_avg_sqs,
            hyper[:, : len(native.HYPER_PARAMETERS)],
            mask=mask,
            strict=strict,
        )
        numel = torch.tensor([p.numel() for p in batch.params], dtype=torch.float64)
        factor = compensation_factor(full, masked, kept, numel, compensation, "2.0", static_float(alpha_max))
        alpha = torch.as_tensor(factor, dtype=torch.float64).expand_as(full)
        empty = (kept == 0) & (mask != "none" and empty_mask == "full")
        alpha = torch.where(empty, 1.0, alpha)
        native.apply_update(batch.params, batch.grads, column["lr"] * alpha, column["decay"])
        for i in empty.nonzero().flatten().tolist():
            # Weight decay is applied; the (zero) masked direction becomes the unmasked step.
            v = dict(zip(STEP_VALUES, hyper[i].tolist(), strict=True))
            moments = batch.exp_avgs[i], batch.exp_avg_sqs[i]
            adam_unmasked_step(batch.params[i], *moments, v["lr"], v["eps"], v["inv_bc1"], v["inv_bc2_sqrt"])
        # At a first_full step the true mask was empty.
        density = torch.zeros_like(kept) if first_full else kept / numel
        for state, a, d in zip(batch.states, alpha.float().unbind(), density.float().unbind(), strict=True):
            state["alpha"], state["mask_density"] = a, d

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

    def _step_scalars(self, group: dict, t: int, dtype: torch.dtype, device: torch.device) -> dict:
        return self._scalars(self._step_values(group, t), dtype, device)

    def _apply_empty_mask_rule(self, maybe_empty: list) -> None:
        """Take the unmasked step for tensors whose mask came out empty (one device sync)."""
        if not maybe_empty:
            return
        device = maybe_empty[0][-1].device
        empty = torch.stack([kept.to(device) == 0 for *_, kept in maybe_empty]).tolist()
        for is_empty, (p, s, _) in zip(empty, maybe_empty, strict=True):
            if is_empty:
                state = self.state[p]
                tensors = _flat(p, state["exp_avg"], state["exp_avg_sq"])
                kernels.run(
                    adam_unmasked_step,
                    self.backend,
                    *tensors,
                    s["lr"],
                    s["eps"],
                    s["inv_bc1"],
                    s["inv_bc2_sqrt"],
                )
                state["alpha"] = torch.ones_like(state["alpha"])


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
