"""SinkGD (Scetbon et al., arXiv 2502.06742, "gradient multi-normalisation"): a stateless step from
alternating row and column normalisations of each matrix gradient (square-root Sinkhorn).

For a gradient G (m x n, the nn.Linear layout), ``iterations`` = L times:

    X <- sqrt(n) · X / rownorm(X)          every row gets l2 norm sqrt(n)
    X <- sqrt(m) · X / colnorm(X)          every column gets l2 norm sqrt(m)

and the step is θ <- θ - η α X. The last normalisation is by columns, so ||X||_F = sqrt(mn) and
RMS(X) = 1 exactly: X has Adam's per-entry scale, and is not renormalised (the paper's convention).
Norms are clamped at ``eps`` so that zero rows and columns stay zero. Only the attention and MLP
matrices are normalised; embeddings, heads, norms and biases get AdamW
(:mod:`alphaadam.optim.normalized`). No public code by the authors exists; the rule follows the
paper's algorithm as described in the project's docs (docs/memory_efficient.md).
"""

from __future__ import annotations

import math

import torch

from alphaadam.optim.common import check_number, check_positive_int
from alphaadam.optim.normalized import NormalizedMatrixAdam, build_for_model
from alphaadam.optim.param_groups import NamedParameters


def sr_sinkhorn(g: torch.Tensor, iterations: int, eps: float = 1e-8) -> torch.Tensor:
    """``iterations`` alternating row and column l2 normalisations of ``g`` to norms sqrt(n), sqrt(m)."""
    m, n = g.shape
    x = g
    for _ in range(iterations):
        x = x * (math.sqrt(n) / x.norm(dim=1, keepdim=True).clamp(min=eps))
        x = x * (math.sqrt(m) / x.norm(dim=0, keepdim=True).clamp(min=eps))
    return x


class SinkGD(NormalizedMatrixAdam):
    """SinkGD on groups with ``normalized=True`` (matrices), AdamW on the others.

    Args:
        lr: the AdamW learning rate; matrices step with ``lr * lr_ratio``.
        lr_ratio: α, the matrices' share of ``lr``.
        iterations: L, the number of row-and-column normalisation rounds.
        sinkhorn_eps: floor of the row and column norms.
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
        iterations: int = 5,
        sinkhorn_eps: float = 1e-8,
        normalized: bool = True,
    ):
        super().__init__(
            params, lr, betas, eps, weight_decay, lr_ratio, normalized, iterations=iterations,
            sinkhorn_eps=sinkhorn_eps,
        )  # fmt: skip

    def _validate_group(self, group: dict) -> None:
        check_positive_int("iterations", group["iterations"])
        check_number("sinkhorn_eps", group["sinkhorn_eps"])

    def direction(self, g: torch.Tensor, group: dict) -> torch.Tensor:
        return sr_sinkhorn(g, group["iterations"], group["sinkhorn_eps"])


def build_sinkgd(
    params: NamedParameters,
    *,
    lr: float = 0.02,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_rule: str = "ndim",
    lr_ratio: float = 0.05,
    iterations: int = 5,
    sinkhorn_eps: float = 1e-8,
    family: str | None = None,
    targets: list[str] | None = None,
) -> SinkGD:
    """SinkGD on the attention and MLP matrices of a GPT, RoBERTa or Llama model (``family``
    detected when not given; ``targets``, regular expressions, replaces the family's choice)."""
    options = dict(locals())  # every keyword above, as given
    return build_for_model(SinkGD, options.pop("params"), **options)
