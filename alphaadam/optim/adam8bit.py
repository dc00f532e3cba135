"""Adam-8bit (Dettmers et al. 2022, arXiv 2110.02861) through bitsandbytes' ``AdamW8bit``.

Both Adam moments are stored as uint8 codes under block-wise dynamic quantisation (blocks of 256
elements, one fp32 absmax per block, a 256-entry code book per moment); each step dequantises,
takes an AdamW step in fp32 and quantises again. Tensors with fewer than ``min_8bit_size`` (4096)
elements keep fp32 moments. Works on CPU with bitsandbytes 0.50.

bitsandbytes' own default weight decay is 1e-2; here it is 0 unless given, and it is passed to
every param group explicitly (the groups of ``weight_decay_rule`` carry 0 for the exempt tensors).
"""

from __future__ import annotations

import torch

from alphaadam.optim.common import check_betas, check_positive_int
from alphaadam.optim.param_groups import NamedParameters


def build_adam8bit(
    params: NamedParameters,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_rule: str = "ndim",
    min_8bit_size: int = 4096,
) -> torch.optim.Optimizer:
    """``bitsandbytes.optim.AdamW8bit`` with the standard two weight-decay groups."""
    from alphaadam.optim.sharded_adam8bit import ShardedAdamW8bit  # imports bitsandbytes

    betas = tuple(betas)  # lists from YAML configs, too
    check_betas(betas)
    check_positive_int("min_8bit_size", min_8bit_size)
    for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r} must be a number >= 0")
    # bitsandbytes' kernels take plain tensors: under FSDP2 it runs on each rank's local shard.
    optimizer = ShardedAdamW8bit(
        params.weight_decay_groups(weight_decay, weight_decay_rule),
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        min_8bit_size=min_8bit_size,
    )
    optimizer.register_step_pre_hook(_refuse_sparse_gradients)
    return optimizer


def _refuse_sparse_gradients(optimizer, args, kwargs) -> None:
    # bitsandbytes fails on sparse gradients with "unsupported memory format option Contiguous"
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError(
                    "Adam-8bit does not support sparse gradients; build embeddings with sparse=False"
                )
