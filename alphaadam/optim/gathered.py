"""Whole-matrix optimizers (LDAdam, GaLore) on FSDP2 shards: gather one matrix, step it, keep the local rows.

A low-rank projection (SVD, power iteration) needs the whole gradient matrix, which FSDP2 splits by
rows over the ranks. For each sharded matrix the optimizer steps, every rank all-gathers the
parameter and its gradient, runs the optimizer's own step on the whole matrix, and writes back only
its own rows. Every rank computes on the same inputs with the same deterministic operations, so the
result equals the unsharded step and the optimizer state of these matrices (low-rank moments, bases)
is the same on every rank: it is kept as plain, replicated tensors, which
``torch.distributed.checkpoint`` saves once and loads on every rank. Matrices are stepped one at a
time, so the extra memory is one whole parameter and gradient, not the model. Everything else
(element-wise parameters such as norms and embeddings) is stepped on its DTensor shards as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch

from alphaadam.optim.sharding import DTensor


def _local_rows(full: torch.Tensor, like) -> torch.Tensor:
    """This rank's part of ``full``, split as the DTensor ``like`` is (uneven shards included);
    ``src_data_rank=None``: every rank holds ``full`` already, so nothing is communicated."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()


@contextmanager
def whole_matrix(optimizer: torch.optim.Optimizer, param):
    """Yield a plain tensor holding all of the DTensor ``param``, with its whole gradient as ``.grad``
    and ``param``'s optimizer state; on exit its rows (and its gradient's) go back to this rank's
    shards and the state back to ``param``. A state entry that is the gradient itself (LDAdam's
    error feedback) stays the gradient: the sharded one outside, the whole one inside."""
    grad = param.grad
    full = param.full_tensor()
    full.grad = grad.full_tensor()
    state = optimizer.state.pop(param, {})
    optimizer.state[full] = {k: full.grad if v is grad else v for k, v in state.items()}
    try:
        yield full
    finally:
        state = optimizer.state.pop(full)
        optimizer.state[param] = {k: grad if v is full.grad else v for k, v in state.items()}
        param.to_local().copy_(_local_rows(full, param))
        grad.to_local().copy_(_local_rows(full.grad, param))


def step_whole_matrices(
    optimizer: torch.optim.Optimizer,
    needs_whole: Callable[[dict], bool],
    step_groups: Callable[[list[dict]], None],
) -> None:
    """One optimizer step in which the sharded parameters of the groups ``needs_whole`` selects
    are stepped whole, one by one (:func:`whole_matrix`).

    ``step_groups(groups)`` runs the optimizer's own update on the given param groups. It is called
    once for everything else (the optimizer's own groups when nothing is sharded: unchanged
    behaviour), then once per sharded matrix with a copy of its group holding only the whole
    matrix. The order is the same on every rank, as the all-gathers require.
    """
    whole, rest = [], []
    for group in optimizer.param_groups:
        picked = needs_whole(group)
        mine = {id(p) for p in group["params"] if picked and isinstance(p, DTensor) and p.grad is not None}
        whole += [(group, p) for p in group["params"] if id(p) in mine]
        rest.append({**group, "params": [p for p in group["params"] if id(p) not in mine]})
    if not whole:
        step_groups(optimizer.param_groups)
        return
    step_groups(rest)
    for group, p in whole:
        with whole_matrix(optimizer, p) as full:
            step_groups([{**group, "params": [full]}])
