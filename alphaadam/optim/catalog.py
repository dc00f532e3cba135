"""The optimizers the registry knows, with where each comes from."""

from __future__ import annotations

import torch

from alphaadam.optim.adalomo import AdaLomo
from alphaadam.optim.adam8bit import build_adam8bit
from alphaadam.optim.adam_mini import build_adam_mini
from alphaadam.optim.adapprox import Adapprox
from alphaadam.optim.alphaadam import AlphaAdam, CAdamW
from alphaadam.optim.alphasgd import AlphaSGD
from alphaadam.optim.galore import build_galore
from alphaadam.optim.ldadam import build_ldadam
from alphaadam.optim.microadam import MicroAdam
from alphaadam.optim.param_groups import NamedParameters
from alphaadam.optim.registry import register, register_class
from alphaadam.optim.sinkgd import build_sinkgd
from alphaadam.optim.swan import build_swan

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

# Baselines of the paper's Tables 1-2 (issue #6). Heavy packages (galore_torch, bitsandbytes) are
# imported inside the builders, so that `import alphaadam.optim` stays light.
register(
    "galore",
    summary="GaLore: AdamW in a low-rank gradient subspace refreshed by SVD every T steps",
    source="galore-torch 1.0 (PyPI)",
    paper="Zhao et al. 2024, arXiv 2403.03507",
)(build_galore)
register(
    "ldadam",
    summary="LDAdam: low-rank Adam, per-step power-iteration subspace, generalised error feedback",
    source="in-project",
    paper="Robert et al. 2024, arXiv 2410.16103",
)(build_ldadam)
register(
    "adam_mini",
    summary="Adam-mini: one second-moment value per block (head, row, tensor)",
    source="in-project",
    paper="Zhang et al. 2024, arXiv 2406.16793",
)(build_adam_mini)
register(
    "adam8bit",
    summary="Adam-8bit: AdamW with block-wise 8-bit moments",
    source="bitsandbytes (PyPI)",
    paper="Dettmers et al. 2022, arXiv 2110.02861",
)(build_adam8bit)
register_class(
    "microadam",
    MicroAdam,
    summary="MicroAdam: Adam over a window of top-k sparse gradients, 4-bit error feedback",
    source="in-project",
    paper="Modoranu et al. 2024, arXiv 2405.15593",
)

# Memory-efficient optimizers of the related papers (issue #15), all in-project.
register_class(
    "adalomo",
    AdaLomo,
    summary="AdaLomo: factored second moment, update normalisation, relative step; fusable into backward",
    source="in-project",
    paper="Lv et al. 2024, arXiv 2310.10195",
)
register(
    "sinkgd",
    summary="SinkGD: stateless alternating row/column normalisation of matrices, AdamW elsewhere",
    source="in-project",
    paper="Scetbon et al. 2025, arXiv 2502.06742",
)(build_sinkgd)
register(
    "swan",
    summary="SWAN: stateless GradNorm + Newton-Schulz whitening of matrices, AdamW elsewhere",
    source="in-project",
    paper="Ma et al. 2024, arXiv 2412.13148",
)(build_swan)
register_class(
    "adapprox",
    Adapprox,
    summary="Adapprox: randomised low-rank second moment with adaptive rank, update clipping",
    source="in-project",
    paper="Zhao et al. 2024, arXiv 2403.14958",
)
