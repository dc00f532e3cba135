"""Parameters sharded by FSDP2 (``fully_shard``): DTensors split by rows over a process group.

The masked optimizers work element-wise on each rank's local shard and need whole-tensor sums only
for alpha, the cautious factors and the empty-mask test. Each rank computes its shard's partial
sums; the statistics tables of every sharded tensor of a step are concatenated and all-reduced once
per step per shard group, so that every rank derives the same alpha and the same empty-mask
decision from the global sums. Optimizer state is created with ``zeros_like(param)`` and stays a
DTensor, which ``torch.distributed.checkpoint`` saves and loads.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed support
    DTensor = ()


def is_plain(tensor: torch.Tensor) -> bool:
    """A tensor that is not a subclass (DTensor, FSDP's wrappers): what raw kernels may read."""
    return type(tensor) in (torch.Tensor, torch.nn.Parameter)


def local(tensor):
    """The rank's shard of a DTensor (a view: writes go to the DTensor); other values unchanged."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def shard_group(param: torch.Tensor, owner: str):
    """The process group over which ``param``'s elements are split, or None when every rank holds
    all of it (a plain tensor or a replicated DTensor). ``owner`` names the optimizer in errors."""
    if not isinstance(param, DTensor):
        return None
    placements = param.placements
    if any(p.is_partial() for p in placements) or (
        param.grad is not None and tuple(param.grad.placements) != tuple(placements)
    ):
        raise RuntimeError(
            f"{owner} needs gradients placed like their FSDP2 parameters (got {placements} and "
            f"{getattr(param.grad, 'placements', None)}); step after backward() of fully_shard-ed modules"
        )
    dims = [i for i, p in enumerate(placements) if p.is_shard()]
    if len(dims) > 1:
        raise RuntimeError(
            f"{owner} supports parameters sharded over one mesh dimension (FSDP2, HSDP), got {placements}"
        )
    return param.device_mesh.get_group(dims[0]) if dims else None


def all_reduce_tables(tables: list[torch.Tensor], groups: list) -> list[torch.Tensor]:
    """Sum each statistics table over its shard group: one all-reduce per distinct group (one per
    step under FSDP2). Tables whose group is None are returned unchanged."""
    reduced = list(tables)
    for group in {id(g): g for g in groups if g is not None}.values():
        members = [i for i, g in enumerate(groups) if g is group]
        stacked = torch.cat([tables[i] for i in members])
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM, group=group)
        for i, part in zip(members, stacked.split([len(tables[i]) for i in members]), strict=True):
            reduced[i] = part
    return reduced


def refuse_dtensors(params, optimizer: str, instead: str) -> None:
    """Raise when a parameter is a DTensor (``fully_shard``): ``optimizer`` cannot take FSDP2 shards."""
    for p in params:
        if isinstance(p, DTensor):
            raise RuntimeError(f"{optimizer} does not support FSDP2 (fully_shard) parameters; {instead}")
