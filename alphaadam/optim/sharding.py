"""Parameters sharded by FSDP2 (``fully_shard``): DTensors split by rows over a process group.

The masked optimizers work element-wise on each rank's local shard and need whole-tensor sums only
for alpha, the cautious factors and the empty-mask test. Each rank computes its shard's partial
sums; the statistics tables of every sharded tensor of a step are concatenated and all-reduced once
per step per shard group, so that every rank derives the same alpha and the same empty-mask
decision from the global sums. Optimizer state is created with ``zeros_like(param)`` and stays a
DTensor, which ``torch.distributed.checkpoint`` saves and loads.

Optimizers that run on each rank's shard as on a plain tensor (MicroAdam, Adam-8bit) keep state
shaped by the shard, not by the parameter; :func:`per_rank_state_as_dtensors` and
:func:`per_rank_state_from_dtensors` turn it into DTensors and back for checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

try:
    from torch.distributed.tensor import DTensor, Replicate, Shard
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


def per_rank_state_as_dtensors(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """``state_dict`` (from ``Optimizer.state_dict()``) with the per-rank state of every FSDP2
    parameter as DTensors, for ``torch.distributed.checkpoint``.

    Some optimizers keep, for a sharded parameter, state that follows the rank's shard but not the
    parameter's shape (quantisation blocks, sparse indices into the shard). DCP would keep one
    rank's copy of such plain tensors. Each one becomes a DTensor of shape (ranks, n): row r is rank
    r's tensor flattened and zero-padded to the longest of the ranks (n), sharded by rows over the
    parameter's shard dimension, so that each rank saves and loads its own row. A collective: every
    rank calls it (as ``get_optimizer_state_dict`` does)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sharded = [(i, p) for i, p in enumerate(params) if isinstance(p, DTensor)]
    if not sharded:
        return state_dict
    state = dict(state_dict["state"])
    for i, _ in sharded:
        if i in state:
            state[i] = _copy_dicts(state[i])
    leaves = {i: list(_tensors(state.get(i, {}))) for i, _ in sharded}
    device = local(sharded[0][1]).device
    counts = torch.tensor([[len(leaves[i]), -len(leaves[i])] for i, _ in sharded], device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.MAX)
    flat = [(i, p, path, t) for i, p in sharded for path, t in leaves[i]]
    codes = [_DTYPES.index(t.dtype) for *_, t in flat]
    table = [[t.numel(), c, -c] for (*_, t), c in zip(flat, codes, strict=True)]
    table = torch.tensor(table, dtype=torch.int64, device=device).reshape(-1, 3)
    for (i, _), (most, fewest) in zip(sharded, counts.tolist(), strict=True):
        if most != -fewest:  # the same on every rank: all of them stop here
            _refuse_mixed(optimizer, i, f"holds {-fewest} state tensors on some ranks and {most} on others")
    dist.all_reduce(table, op=dist.ReduceOp.MAX)
    for (i, p, path, t), (length, code, negative) in zip(flat, table.tolist(), strict=True):
        if code != -negative:
            _refuse_mixed(optimizer, i, f"has its {'.'.join(path)!r} in different dtypes on different ranks")
        row = torch.zeros(1, length, dtype=t.dtype, device=device)
        row[0, : t.numel()] = t.reshape(-1)
        placements = [Shard(0) if pl.is_shard() else Replicate() for pl in p.placements]
        rows = DTensor.from_local(
            row, p.device_mesh, placements, run_check=False, shape=(_ranks(p), length), stride=(length, 1)
        )
        _put(state[i], path, rows)
    return {**state_dict, "state": state}


def per_rank_state_from_dtensors(optimizer: torch.optim.Optimizer, state_dict: dict, layout) -> dict:
    """The inverse of :func:`per_rank_state_as_dtensors`, before ``load_state_dict``: each rank takes
    its row back in the shape of its own state. ``layout(group, param)`` returns the (flat) state
    that the optimizer has or would make for ``param``: its tensors give the shapes and devices.
    Refuses, in one line, rows saved on a different number of ranks."""
    saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    targets = [(g, p) for g in optimizer.param_groups for p in g["params"]]
    if len(saved_ids) != len(targets) or not any(isinstance(p, DTensor) for _, p in targets):
        return state_dict  # nothing to undo; ``load_state_dict`` reports mismatched groups
    state = dict(state_dict["state"])
    for index, (i, (group, p)) in enumerate(zip(saved_ids, targets, strict=True)):
        if not isinstance(p, DTensor) or i not in state:
            continue
        state[i] = _copy_dicts(state[i])
        shapes = None
        for path, rows in _tensors(state[i]):
            if not isinstance(rows, DTensor):
                continue
            if rows.shape[0] != _ranks(p):
                raise RuntimeError(
                    f"{type(optimizer).__name__}'s state of {_param_name(optimizer, index)} was saved on "
                    f"{rows.shape[0]} FSDP2 ranks and is loaded on {_ranks(p)}: it follows each rank's "
                    f"shard, so resume with {rows.shape[0]} ranks, or start the optimizer state afresh"
                )
            shapes = shapes or layout(group, p)
            like = shapes[path[-1]]
            row = rows.to_local().reshape(-1)
            if row.numel() < like.numel() or row.dtype != like.dtype:
                raise RuntimeError(
                    f"{type(optimizer).__name__}'s saved state {'.'.join(path)!r} of "
                    f"{_param_name(optimizer, index)} ({row.numel()} {row.dtype}) does not fit this rank's "
                    f"shard ({like.numel()} {like.dtype}); load it with the settings it was saved with"
                )
            _put(state[i], path, row[: like.numel()].reshape(like.shape).to(like.device, copy=True))
    return {**state_dict, "state": state}


# Every dtype a state tensor may have, in a fixed order: an index names one across ranks.
_DTYPES = sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str)


def _refuse_mixed(optimizer, index: int, what: str) -> None:
    raise RuntimeError(
        f"{type(optimizer).__name__}'s state of {_param_name(optimizer, index)} {what} (Adam-8bit: the "
        "shards lie on both sides of min_8bit_size, 8-bit on some ranks and fp32 on others); DCP cannot "
        "save it: choose a min_8bit_size that none of its shards straddles"
    )


def shard_numel_range(param) -> tuple[int, int]:
    """The fewest and most elements any rank holds of a DTensor ``param`` (torch's chunking: each of
    ``n`` ranks takes ``ceil(size / n)`` rows of a sharded dimension, the last ones what is left)."""
    smallest, largest = list(param.shape), list(param.shape)
    for d, pl in enumerate(param.placements):
        if pl.is_shard():
            n, size = param.device_mesh.size(d), largest[pl.dim]
            chunk = -(-size // n)
            smallest[pl.dim], largest[pl.dim] = max(0, size - chunk * (n - 1)), min(chunk, size)
    return math.prod(smallest), math.prod(largest)


def _ranks(param) -> int:
    """The number of ranks over which ``param``'s rows are split."""
    return math.prod(param.device_mesh.size(d) for d, pl in enumerate(param.placements) if pl.is_shard())


def _param_name(optimizer, index: int) -> str:
    names = [n for g in optimizer.param_groups for n in g.get("param_names", [None] * len(g["params"]))]
    return repr(names[index]) if names[index] else f"parameter #{index}"


def _copy_dicts(state: dict) -> dict:
    """A copy of a (nested) state dict's dictionaries, sharing its tensors."""
    return {k: _copy_dicts(v) if isinstance(v, dict) else v for k, v in state.items()}


def _tensors(state: dict, prefix: tuple = ()):
    """(key path, tensor) of every tensor in a nested state dict, in an order every rank shares."""
    for key in sorted(state, key=str):
        value = state[key]
        if isinstance(value, dict):
            yield from _tensors(value, (*prefix, key))
        elif torch.is_tensor(value):
            yield (*prefix, key), value


def _put(state: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        state = state[key]
    state[path[-1]] = value


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
