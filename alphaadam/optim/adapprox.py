"""Adapprox (Zhao et al., arXiv 2403.14958): the second moment of every matrix kept as a randomised
low-rank factorisation Q Uᵀ whose rank adapts to how well it fits.

Per matrix θ (m x n; higher ranks as shape[0] x rest) with gradient G, at step t:

    V   = β2 · max(Q Uᵀ, 0) + (1 - β2) · G ⊙ G  (a dense m x n temporary; Q Uᵀ = 0 at the first step)
    Q, U = low-rank factors of V for the next step (see :func:`low_rank_factors`)
    M̂   = G / (sqrt(V) + eps)
    M̂  <- M̂ / max(1, RMS(M̂) / d)               (update clipping, d = clip_threshold; None: off)
    M   = β1 M + (1 - β1) M̂ if β1 > 0, else M̂   (momentum of the normalised update)
    θ  <- θ (1 - η wd) - η · s · M               (s = 1, or the cosine guidance below)

A truncated Q Uᵀ of a nonnegative matrix can dip below zero. Clamping V itself at zero before the
square root (the rule as it is usually transcribed) leaves entries where V is 0 while G is not, whose
steps G / eps then dominate the matrix's RMS, so the clipping shrinks every other step (on the demo's
GPT the loss stalled; docs/memory_efficient.md). Here the reconstruction is clamped instead, before
the new gradient is mixed in, so every entry keeps V >= (1 - β2) G² and |M̂| <= 1 / sqrt(1 - β2) (a
project choice; exact at full rank).
Vectors keep a dense v (the same rule with Q Uᵀ replaced by v). There is no bias correction: at full
rank, with β1 = 0, no clipping and no guidance this is ``torch.optim.RMSprop(alpha=β2, eps=eps)``
(tested). State per matrix: Q (m x k) and U (n x k) for the current rank k, plus M (m x n) when
β1 > 0; see :func:`state_numel`.

**Rank.** A randomised subspace iteration (``oversample`` extra columns, ``power_iters`` rounds)
at k_max + oversample columns, then a small SVD inside the subspace, orders the directions; the
relative error of every prefix rank j is exact from the singular values,
||V - Q_j Q_jᵀ V||_F² = ||V||_F² - Σ_{i<=j} s_i², and the rank kept is the smallest j in
[min_rank, k_max] whose error is at most ``error_threshold`` (else k_max). The paper grows the rank
step by step from the previous one; reading every prefix off one factorisation gives the same
choice within the subspace in one pass (a project choice). k_max defaults to min(m, n) / 4, which
matches the abstract's memory figures (inferred).

**Cosine guidance** (``cosine_guidance=True``, off by default): the paper's abstract names a
cosine-similarity guidance but its formula was not available to us. The variant here scales the step
by s = (1 + cos(M, M̂)) / 2, so that momentum pointing away from the current normalised update takes a
smaller step; it only matters with β1 > 0. It is the project's design, not the paper's formula.

The random test matrices come from a generator seeded by (``seed``, step, parameter index), so a
resumed run draws the same ones as an uninterrupted run.
"""

from __future__ import annotations

import torch

from alphaadam.optim.adalomo import rms
from alphaadam.optim.base import state_dtype
from alphaadam.optim.common import (
    KeepsStateDtypes,
    check_adam_group,
    check_number,
    check_positive_int,
    evaluate_closure,
    params_with_grad,
)
from alphaadam.optim.sharding import refuse_dtensors


def state_numel(m: int, n: int, rank: int, first_moment: bool) -> int:
    """Numbers Adapprox keeps for an m x n matrix: (m + n) k, plus m n with a first moment."""
    return (m + n) * rank + (m * n if first_moment else 0)


def low_rank_factors(
    v: torch.Tensor,
    *,
    min_rank: int,
    max_rank: int,
    error_threshold: float,
    oversample: int,
    power_iters: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Q (m x k, orthonormal columns) and U (n x k) with v ≈ Q Uᵀ and k chosen as the module says."""
    m, n = v.shape
    width = min(max_rank + oversample, m, n)
    omega = torch.randn(n, width, generator=generator, dtype=v.dtype).to(v.device)
    q = torch.linalg.qr(v @ omega).Q
    for _ in range(power_iters):
        q = torch.linalg.qr(v @ (v.T @ q)).Q
    left, singular, right = torch.linalg.svd(q.T @ v, full_matrices=False)
    q, u = q @ left, (singular[:, None] * right).T
    total = v.square().sum()
    residual = (total - singular.square().cumsum(0)).clamp(min=0)  # error of prefix rank 1, 2, ...
    fits = (residual <= error_threshold**2 * total).nonzero()
    top = min(max_rank, width)
    fitting = [j + 1 for j in fits.flatten().tolist() if min_rank <= j + 1 <= top]
    rank = fitting[0] if fitting else top
    return q[:, :rank].contiguous(), u[:, :rank].contiguous()


class Adapprox(KeepsStateDtypes, torch.optim.Optimizer):
    """Adapprox; see the module docstring.

    Args:
        lr: η. betas: (β1, β2); β1 = 0 keeps no first moment.
        eps: added to sqrt(V). weight_decay: decoupled.
        clip_threshold: d of the update clipping; None turns it off.
        max_rank: k_max per matrix (None: max(1, min(m, n) // 4)); min_rank: the smallest rank kept.
        error_threshold: the relative Frobenius error a rank must reach to be chosen.
        oversample, power_iters: of the randomised subspace iteration.
        cosine_guidance: scale the step by (1 + cos(M, M̂)) / 2 (the project's variant; see above).
        seed: of the random test matrices.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        clip_threshold: float | None = 1.0,
        max_rank: int | None = None,
        min_rank: int = 1,
        error_threshold: float = 0.01,
        oversample: int = 5,
        power_iters: int = 5,
        cosine_guidance: bool = False,
        seed: int = 0,
    ):
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            clip_threshold=clip_threshold,
            max_rank=max_rank,
            min_rank=min_rank,
            error_threshold=error_threshold,
            oversample=oversample,
            power_iters=power_iters,
            cosine_guidance=cosine_guidance,
            seed=seed,
        )
        super().__init__(params, defaults)
        every = (p for group in self.param_groups for p in group["params"])
        refuse_dtensors(every, "Adapprox", "its low-rank second moment needs whole matrices")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_adam_group(group)
        check_number("error_threshold", group["error_threshold"])
        if group["clip_threshold"] is not None:
            check_number("clip_threshold", group["clip_threshold"], low=1e-12)
        if group["max_rank"] is not None:
            check_positive_int("max_rank", group["max_rank"])
        check_positive_int("min_rank", group["min_rank"])
        if group["max_rank"] is not None and group["min_rank"] > group["max_rank"]:
            raise ValueError(f"min_rank={group['min_rank']} is larger than max_rank={group['max_rank']}")
        for key in ("oversample", "power_iters", "seed"):
            value = group[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key}={value!r} must be an integer >= 0")
        if not isinstance(group["cosine_guidance"], bool):
            raise ValueError(f"cosine_guidance={group['cosine_guidance']!r} must be true or false")
        for p in group["params"]:
            if not p.is_floating_point():
                raise ValueError(f"Adapprox needs floating-point parameters, got {p.dtype}")

    def ranks(self) -> list[int]:
        """The current rank of every factored matrix, in parameter order (for logging)."""
        return [s["factor_q"].shape[1] for s in self.state.values() if "factor_q" in s]

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        index = {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        for group, _, p in params_with_grad(self):
            self._update(p, group, index[p])
        return loss

    def _update(self, p: torch.Tensor, group: dict, index: int) -> None:
        beta1, beta2 = group["betas"]
        dtype = state_dtype(p)
        factored = p.dim() >= 2
        shape = (p.shape[0], p.numel() // p.shape[0]) if factored else p.shape
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            if factored:
                state["factor_q"] = torch.zeros(shape[0], 0, dtype=dtype, device=p.device)
                state["factor_u"] = torch.zeros(shape[1], 0, dtype=dtype, device=p.device)
            else:
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.contiguous_format)
            if beta1 > 0:
                state["exp_avg"] = torch.zeros(shape, dtype=dtype, device=p.device)
        state["step"] += 1
        g = p.grad.to(dtype).reshape(shape)

        if factored:
            previous = (state["factor_q"] @ state["factor_u"].T).clamp_(min=0)
            v = previous.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            generator = torch.Generator().manual_seed(
                group["seed"] * 1_000_003 + int(state["step"].item()) * 7919 + index
            )
            state["factor_q"], state["factor_u"] = low_rank_factors(
                v,
                min_rank=group["min_rank"],
                max_rank=group["max_rank"] or max(1, min(shape) // 4),
                error_threshold=group["error_threshold"],
                oversample=group["oversample"],
                power_iters=group["power_iters"],
                generator=generator,
            )
        else:
            v = state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        update = g / v.sqrt().add_(group["eps"])
        if group["clip_threshold"] is not None:
            update.div_((rms(update) / group["clip_threshold"]).clamp(min=1.0))
        step_size = group["lr"]
        if beta1 > 0:
            momentum = state["exp_avg"].lerp_(update, 1 - beta1)
            if group["cosine_guidance"]:
                cos = torch.nn.functional.cosine_similarity(momentum.flatten(), update.flatten(), dim=0)
                step_size = step_size * (1 + cos) / 2
            update = momentum
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.sub_((step_size * update).reshape(p.shape).to(p.dtype))
