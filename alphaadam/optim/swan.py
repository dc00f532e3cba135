"""SWAN (Ma et al., arXiv 2412.13148): a stateless step from two normalisations of each matrix
gradient, GradNorm and GradWhitening; SinkGD's multi-normalisation generalises it.

For a gradient G (m x n, transposed first when m > n so that m <= n):

    G̃ = (G - rowmean(G)) / rowstd(G)            GradNorm: every row standardised over its n entries
    ΔW = (G̃ G̃ᵀ)^(-1/2) G̃                        GradWhitening: the polar factor U Vᵀ of G̃

The inverse square root comes from ``ns_steps`` coupled Newton–Schulz iterations on
A / ||A||_F (A = G̃ G̃ᵀ): Y <- Y T / 2, Z <- T Z / 2 with T = 3I - Z Y, so that Z -> (A / ||A||_F)^(-1/2).
With ``rms_scale`` (default), ΔW is scaled to RMS 1 (times sqrt(n)), the per-entry scale of Adam
and of SinkGD. The step is θ <- θ - η α ΔW; embeddings, heads, norms and biases get AdamW
(:mod:`alphaadam.optim.normalized`). No public code by the authors exists; the iteration count and
the output scale are the project's choices (docs/memory_efficient.md).
"""

from __future__ import annotations

import math

import torch

from alphaadam.optim.common import check_positive_int
from alphaadam.optim.normalized import NormalizedMatrixAdam, build_for_model
from alphaadam.optim.param_groups import NamedParameters


def grad_norm_rows(g: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Every row standardised: mean 0 and (population) variance 1 over its entries."""
    centred = g - g.mean(dim=1, keepdim=True)
    return centred / centred.square().mean(dim=1, keepdim=True).sqrt().clamp(min=eps)


def whiten(g: torch.Tensor, ns_steps: int) -> torch.Tensor:
    """(g gᵀ)^(-1/2) g for g with at most as many rows as columns (coupled Newton–Schulz)."""
    a = g @ g.T
    c = a.norm().clamp(min=torch.finfo(a.dtype).tiny)
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    y, z = a / c, eye
    for _ in range(ns_steps):
        t = 3 * eye - z @ y
        y, z = 0.5 * y @ t, 0.5 * t @ z
    return (z / c.sqrt()) @ g


def swan_direction(g: torch.Tensor, ns_steps: int, rms_scale: bool = True, eps: float = 1e-8) -> torch.Tensor:
    wide = g.T if g.shape[0] > g.shape[1] else g
    update = whiten(grad_norm_rows(wide, eps), ns_steps)
    if rms_scale:
        update = update * (math.sqrt(update.numel()) / update.norm().clamp(min=eps))
    return update.T if g.shape[0] > g.shape[1] else update


class SWAN(NormalizedMatrixAdam):
    """SWAN on groups with ``normalized=True`` (matrices), AdamW on the others.

    Args:
        lr: the AdamW learning rate; matrices step with ``lr * lr_ratio``.
        lr_ratio: α, the matrices' share of ``lr``.
        ns_steps: Newton–Schulz iterations of the whitening.
        rms_scale: scale the whitened update to RMS 1 (else its rows are orthonormal).
        betas, eps, weight_decay: of AdamW (weight decay is decoupled in both kinds of group).
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        lr_ratio: float = 0.05,
        ns_steps: int = 10,
        rms_scale: bool = True,
        normalized: bool = True,
    ):
        super().__init__(
            params, lr, betas, eps, weight_decay, lr_ratio, normalized, ns_steps=ns_steps, rms_scale=rms_scale
        )

    def _validate_group(self, group: dict) -> None:
        check_positive_int("ns_steps", group["ns_steps"])
        if not isinstance(group["rms_scale"], bool):
            raise ValueError(f"rms_scale={group['rms_scale']!r} must be true or false")

    def direction(self, g: torch.Tensor, group: dict) -> torch.Tensor:
        return swan_direction(g, group["ns_steps"], group["rms_scale"])


def build_swan(
    params: NamedParameters,
    *,
    lr: float = 0.02,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_rule: str = "ndim",
    lr_ratio: float = 0.05,
    ns_steps: int = 10,
    rms_scale: bool = True,
    family: str | None = None,
    targets: list[str] | None = None,
) -> SWAN:
    """SWAN on the attention and MLP matrices of a GPT, RoBERTa or Llama model (see build_sinkgd)."""
    options = dict(locals())  # every keyword above, as given
    return build_for_model(SWAN, options.pop("params"), **options)
