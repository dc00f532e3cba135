"""Adam-mini (Zhang et al. 2024, arXiv 2406.16793), written here with explicit partition rules.

Adam-mini keeps Adam's first moment but only one second-moment value per *block* of parameters:
the mean of the squared gradient over the block, averaged over time with beta2. The update equals
Adam's with v replaced by the block's value:

    m <- beta1 m + (1 - beta1) g                    (full size)
    v_B <- beta2 v_B + (1 - beta2) mean_B(g^2)      (one number per block B)
    theta <- theta (1 - lr wd) - lr (m / (1 - beta1^t)) / (sqrt(v_B / (1 - beta2^t)) + eps)

This reproduces the official package ``adam-mini==1.1.1`` (tested for equality on Llama names),
whose partition is decided by substrings of parameter names and crashes on Hugging Face RoBERTa
(its per-row branch receives the 1-D LayerNorm weights under ``embeddings``/``output``). Here the
partition is an explicit, tested table per model family (:mod:`alphaadam.optim.families`):

* per head: query and key projections (and the query/key thirds of GPT-2's fused ``c_attn``);
* per output row: embeddings, value, attention output, MLP, LM and classifier heads;
* per tensor: norm weights;
* per coordinate (plain Adam): biases, as in 1.1.1.

Two deliberate differences from 1.1.1's name matching, both following the paper's rules rather
than 1.1.1's substring accidents: RoBERTa's ``intermediate.dense`` and the classifier get one value
per row (1.1.1 gives them one value per tensor because their names match none of its substrings),
and nanoGPT's ``c_attn``/``attn.c_proj``/``wpe`` get per-head/per-row blocks (1.1.1: one per tensor).

Hugging Face GPT-2 has the same names but stores its ``Conv1D`` weights as (in, out). 1.1.1 takes
the stored rows regardless (its per-row ``mlp`` blocks are then input features, and ``c_attn`` is one
block). Here those weights are marked ``transposed`` and their blocks are the stored columns: the
same heads and neurons, and the same update, as nanoGPT's ``nn.Linear`` layout.
"""

from __future__ import annotations

import math

import torch

from alphaadam.optim.base import state_dtype
from alphaadam.optim.common import (
    KeepsStateDtypes,
    check_adam_group,
    check_positive_int,
    evaluate_closure,
    param_name,
    params_with_grad,
)
from alphaadam.optim.families import BLOCK_KINDS, adam_mini_blocks, attention_head_dim, stored_transposed
from alphaadam.optim.param_groups import NamedParameters
from alphaadam.optim.sharding import refuse_dtensors


def block_segments(kind: str, rows: int, head_dim: int | None) -> list[tuple[int, int, int]]:
    """Row ranges (start, stop, rows per block) of a matrix under a segmented block kind."""
    if kind == "row":
        return [(0, rows, 1)]
    if kind == "head":
        return [(0, rows, head_dim)]
    if kind == "qkv":  # nanoGPT c_attn: rows [q; k; v], each n_embd long
        d = rows // 3
        return [(0, 2 * d, head_dim), (2 * d, rows, 1)]
    raise ValueError(f"block kind {kind!r} has no row segments")


def block_count(kind: str, shape: torch.Size, head_dim: int | None) -> int:
    """How many second-moment values a tensor of this shape keeps."""
    if kind == "adam":
        return math.prod(shape)
    if kind == "tensor":
        return 1
    return sum((stop - start) // per for start, stop, per in block_segments(kind, shape[0], head_dim))


def block_mean_square(g: torch.Tensor, kind: str, head_dim: int | None) -> torch.Tensor:
    """mean(g^2) over each block: a 1-D tensor with one value per block (segmented kinds)."""
    squares = g * g
    parts = [
        squares[start:stop].reshape((stop - start) // per, -1).mean(dim=1)
        for start, stop, per in block_segments(kind, g.shape[0], head_dim)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def row_scale(per_block: torch.Tensor, kind: str, rows: int, head_dim: int | None) -> torch.Tensor:
    """Spread one value per block to one value per row of the matrix."""
    parts, first = [], 0
    for start, stop, per in block_segments(kind, rows, head_dim):
        n = (stop - start) // per
        parts.append(per_block[first : first + n].repeat_interleave(per))
        first += n
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def as_rows(t: torch.Tensor, group: dict) -> torch.Tensor:
    """The tensor with one block row per row: transposed for (in, out)-stored matrices."""
    return t.T if group["transposed"] else t


class AdamMini(KeepsStateDtypes, torch.optim.Optimizer):
    """Adam with one second-moment value per block; each param group says its block kind.

    Args:
        block: the block kind of a group's tensors (groups override it): ``"adam"`` (per
            coordinate), ``"head"`` (``head_dim`` rows of a query/key matrix), ``"qkv"`` (nanoGPT's
            fused [q; k; v] matrix: q and k per head, v per row), ``"row"`` (per output row) or
            ``"tensor"``. :func:`alphaadam.optim.build_optimizer` with ``"adam_mini"`` makes the
            groups from the model family's rules.
        head_dim: rows per attention head, for ``"head"`` and ``"qkv"``.
        transposed: the group's matrices are stored as (in, out), like Hugging Face's ``Conv1D``
            (GPT-2): blocks are then made of the stored *columns*, so that a head or a neuron is the
            same set of weights as in the (out, in) layout of ``nn.Linear``.

    State per tensor: ``exp_avg`` (full size), ``exp_avg_sq`` (one value per block; full size for
    ``"adam"``), ``step`` (one counter per tensor, as in 1.1.1). bf16/fp16 parameters keep fp32 state.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        block: str | None = None,
        head_dim: int | None = None,
        transposed: bool = False,
    ):
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            block=block,
            head_dim=head_dim,
            transposed=transposed,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_adam_group(group)
        kind, head_dim = group["block"], group["head_dim"]
        if kind not in BLOCK_KINDS:
            raise ValueError(f"block={kind!r} is not one of {BLOCK_KINDS} (every param group needs one)")
        if kind in ("head", "qkv"):
            check_positive_int("head_dim", head_dim)
        if not isinstance(group["transposed"], bool):
            raise ValueError(f"transposed={group['transposed']!r} must be True or False")
        if group["transposed"] and kind in ("adam", "tensor"):
            raise ValueError(f"transposed=True needs a block kind made of rows, not block={kind!r}")
        for i, p in enumerate(group["params"]):
            if not p.is_floating_point():
                raise ValueError(f"AdamMini needs floating-point parameters, got {p.dtype}")
            if kind in ("adam", "tensor"):
                continue
            if p.dim() != 2:
                raise ValueError(
                    f"block={kind!r} needs a matrix, but {param_name(group, i)} has shape {tuple(p.shape)}"
                )
            rows = as_rows(p, group).shape[0]
            section = rows // 3 if kind == "qkv" else rows
            if (kind == "qkv" and rows % 3) or (kind != "row" and section % head_dim):
                stored = " stored as (in, out)" if group["transposed"] else ""
                raise ValueError(
                    f"block={kind!r} with head_dim={head_dim} does not fit the {tuple(p.shape)} "
                    f"parameter {param_name(group, i)}{stored}"
                )

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group, _, p in params_with_grad(self):
            kind, head_dim = group["block"], group["head_dim"]
            state = self.state[p]
            if not state:
                dtype = state_dtype(p)
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
                if kind == "adam":
                    state["exp_avg_sq"] = torch.zeros_like(
                        p, dtype=dtype, memory_format=torch.preserve_format
                    )
                else:
                    count = block_count(kind, as_rows(p, group).shape, head_dim)
                    state["exp_avg_sq"] = torch.zeros(count, dtype=dtype, device=p.device)
            beta1, beta2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            g = p.grad.to(m.dtype)
            # views: the in-place updates below write through to the parameter and its moment
            p, m, g = as_rows(p, group), as_rows(m, group), as_rows(g, group)
            state["step"] += 1
            t = state["step"].item()
            bc1, bc2_sqrt = 1 - beta1**t, math.sqrt(1 - beta2**t)

            if kind == "adam":
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            elif kind == "tensor":
                v.mul_(beta2).add_((g * g).mean(), alpha=1 - beta2)
            else:
                v.mul_(beta2).add_(block_mean_square(g, kind, head_dim), alpha=1 - beta2)
            m.lerp_(g, 1 - beta1)
            p.mul_(1 - lr * group["weight_decay"])

            scale = (1 / bc1) / (v.sqrt() / bc2_sqrt).add_(eps)  # per block
            if kind in ("adam", "tensor"):
                update = m * scale
            else:
                update = m * row_scale(scale, kind, p.shape[0], head_dim)[:, None]
            p.add_(update.mul_(lr).to(p.dtype), alpha=-1)
        return loss


def build_adam_mini(
    params: NamedParameters,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_rule: str = "ndim",
    family: str | None = None,
    n_heads: int | None = None,
    head_dim: int | None = None,
) -> AdamMini:
    """Adam-mini for a GPT (nanoGPT or Hugging Face GPT-2), RoBERTa or Llama model, by the family's rules.

    The head size comes from ``head_dim``, else ``hidden / n_heads``, else the model's config.
    Weights of Hugging Face ``Conv1D`` modules (GPT-2 stores them as (in, out)) get ``transposed``
    groups, so that their blocks are the same heads and neurons as nanoGPT's ``nn.Linear`` weights.
    Weight decay follows ``weight_decay_rule`` like every optimizer here (1.1.1 exempts names
    containing "norm", "ln" or "bias", which is the same set on these families under "ndim").
    """
    refuse_dtensors((p for _, p in params.named), "Adam-mini", "its blocks (heads, rows) span the shards")
    kinds = adam_mini_blocks(params, family)
    transposed = stored_transposed(params)
    check_fused_qkv_layout(params, kinds, transposed)
    per_head = [(n, p) for n, p in params.named if kinds[n] in ("head", "qkv")]
    size = None
    if per_head:  # without a config, the hidden size is the input width of the query/key matrices
        name, first = per_head[0]
        width = first.shape[0] if name in transposed else first.shape[1]
        size = attention_head_dim(params, n_heads, head_dim, width)
    decays = params.decays(weight_decay_rule)
    groups = []
    for kind in BLOCK_KINDS:
        for is_transposed in (False, True):
            for decayed in (True, False):
                chosen = [
                    (n, p)
                    for n, p in params.named
                    if kinds[n] == kind and (n in transposed) == is_transposed and decays[n] == decayed
                ]
                if chosen:
                    groups.append(
                        {
                            "params": chosen,
                            "block": kind,
                            "head_dim": size,
                            "transposed": is_transposed,
                            "weight_decay": weight_decay if decayed else 0.0,
                        }
                    )
    return AdamMini(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def check_fused_qkv_layout(params: NamedParameters, kinds: dict[str, str], transposed: set[str]) -> None:
    """Refuse a fused [q; k; v] matrix whose stored layout cannot be told from names alone.

    A (hidden, 3 hidden) ``c_attn`` is Hugging Face GPT-2's ``Conv1D`` layout; given only
    ``named_parameters()`` there is no module to say which of the other (square) weights share it.
    """
    for n, p in params.named:
        if kinds[n] == "qkv" and n not in transposed and p.shape[1] == 3 * p.shape[0]:
            raise ValueError(
                f"Adam-mini: {n!r} has shape {tuple(p.shape)}, the (in, out) layout of Hugging Face "
                "GPT-2's Conv1D; pass the model itself (not its named_parameters()) so that every "
                "Conv1D weight is found"
            )
