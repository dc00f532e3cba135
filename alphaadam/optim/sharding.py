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
    """Sum each statistics table over its shard group: one all-reduce per distinct set of ranks (one
    per step under FSDP2, however many meshes ``fully_shard`` made). Tables whose group is None are
    returned unchanged."""
    reduced = list(tables)
    by_ranks: dict[tuple, list[int]] = {}
    for i, group in enumerate(groups):
        if group is not None:
            by_ranks.setdefault(tuple(dist.get_process_group_ranks(group)), []).append(i)
    for members in by_ranks.values():
        stacked = torch.cat([tables[i] for i in members])
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM, group=groups[members[0]])
        for i, part in zip(members, stacked.split([len(tables[i]) for i in members]), strict=True):
            reduced[i] = part
    return reduced


def on_local_shards(groups: list[dict]) -> tuple[list[dict], list]:
    """Param groups (of ``(name, parameter)`` pairs) for an optimizer that cannot take DTensors:
    each DTensor is replaced by a plain parameter aliasing its local shard (the same memory).
    Returns the groups and the (DTensor, alias) pairs for :func:`attach_local_gradients`."""
    pairs, out = [], []
    for group in groups:
        params = []
        for name, p in group["params"]:
            if isinstance(p, DTensor):
                alias = torch.nn.Parameter(p.to_local(), requires_grad=p.requires_grad)
                pairs.append((p, alias))
                p = alias
            params.append((name, p))
        out.append({**group, "params": params})
    return out, pairs


def attach_local_gradients(optimizer: torch.optim.Optimizer, pairs: list) -> None:
    """Before every step, give each alias of :func:`on_local_shards` its DTensor's local gradient."""

    def hook(opt, args, kwargs):
        for param, alias in pairs:
            alias.grad = local(param.grad)

    if pairs:
        optimizer.register_step_pre_hook(hook)


def mark_shard_state(param: torch.Tensor, state: dict) -> None:
    """Record which rank made a per-rank (not DTensor) state of a sharded parameter."""
    if isinstance(param, DTensor):
        state["shard_rank"] = torch.tensor(dist.get_rank())


def check_shard_states(optimizer: torch.optim.Optimizer, name: str) -> None:
    """After loading: refuse per-rank states that another rank saved (what
    ``torch.distributed.checkpoint`` does with plain tensors: it keeps one rank's copy)."""
    for state in optimizer.state.values():
        if "shard_rank" in state and int(state["shard_rank"]) != dist.get_rank():
            raise RuntimeError(
                f"{name}'s FSDP2 state is per rank, and rank {dist.get_rank()} was given rank "
                f"{int(state['shard_rank'])}'s; save and load it per rank with optimizer.state_dict(), "
                "not torch.distributed.checkpoint"
            )


# The registered optimizers that run on FSDP2 shards (docs/distributed.md).
FSDP2_READY = (
    "adamw, sgd, alphaadam, cadamw, adamw_am, adamw_sm, alphasgd, microadam, adam8bit, ldadam or galore"
)


def refuse_dtensors(params, optimizer: str, reason: str) -> None:
    """Raise when a parameter is a DTensor (``fully_shard``): ``optimizer`` cannot take FSDP2 shards."""
    if any(isinstance(p, DTensor) for p in params):
        raise RuntimeError(
            f"{optimizer} does not support FSDP2 (fully_shard) parameters: {reason}; "
            f"train it with DDP, or use {FSDP2_READY} under FSDP2"
        )
