"""The optimizers the registry knows, with where each comes from."""

from __future__ import annotations

import torch

from alphaadam.optim.alphaadam import AlphaAdam, CAdamW
from alphaadam.optim.alphasgd import AlphaSGD
from alphaadam.optim.param_groups import NamedParameters
from alphaadam.optim.registry import register, register_class

PAPER = "AlphaAdam, arXiv 2501.18094"


@register(
    "adamw",
    summary="AdamW, torch's fastest kernel for the device",
    source="torch",
    paper="Loshchilov & Hutter 2019",
)
def adamw(
    params: NamedParameters,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_rule: str = "ndim",
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    if fused is None:  # the fused kernel exists for CPU and CUDA floating-point tensors
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in params.named)
    return torch.optim.AdamW(
        params.weight_decay_groups(weight_decay, weight_decay_rule),
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        weight_decay=weight_decay,
        fused=fused,
    )


register_class("sgd", torch.optim.SGD, summary="SGD with momentum", source="torch")
register_class(
    "alphaadam",
    AlphaAdam,
    summary="AdamW + asynchronous mask + dynamic alpha",
    source="in-project",
    paper=PAPER,
)
register_class(
    "cadamw",
    CAdamW,
    summary="Cautious AdamW (synchronous mask)",
    source="in-project",
    paper="Liang et al. 2024, arXiv 2411.16085",
)
register_class(
    "alphasgd",
    AlphaSGD,
    summary="SGD with momentum + asynchronous mask + dynamic alpha",
    source="in-project",
    paper=PAPER,
)
# Table 3 ablation rows, as presets of AlphaAdam.
register_class(
    "adamw_sm",
    AlphaAdam,
    fixed=dict(mask="sync", compensation="cautious_mean"),
    summary="AdamW + synchronous mask (Table 3 'AdamW + SM')",
    source="in-project",
    paper=PAPER,
)
register_class(
    "adamw_am",
    AlphaAdam,
    fixed=dict(mask="async", compensation="cautious_mean"),
    summary="AdamW + asynchronous mask (Table 3 'AdamW + AM')",
    source="in-project",
    paper=PAPER,
)
