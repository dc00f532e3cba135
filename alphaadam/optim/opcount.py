"""How many ATen ops an optimizer step dispatches: on a GPU each is at least one kernel launch.

A ``TorchDispatchMode`` sees every op that reaches the dispatcher from Python, once, whatever the op
does inside (a ``_foreach`` op over a whole list counts once), so a step whose count does not
change with the number of parameter tensors launches a number of kernels that does not either
(up to torch's own per-tensor fallbacks inside an op).
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alphaadam.optim.param_groups import NamedParameters
from alphaadam.optim.registry import build_optimizer

# torch.optim.AdamW reads each step counter on the host (a CPU tensor: no device work).
HOST_READ = "aten._local_scalar_dense.default"


class OpCounter(TorchDispatchMode):
    """Counts ATen ops by name while active."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def model_like(n: int, device="cpu") -> list[tuple[str, torch.nn.Parameter]]:
    """``n`` small named parameters, alternately matrices (decayed) and vectors (not): two groups."""
    gen = torch.Generator().manual_seed(n)
    shapes = [(4, 3), (5,)]
    return [
        (f"p{i}", torch.nn.Parameter(torch.randn(shapes[i % 2], generator=gen).to(device))) for i in range(n)
    ]


def build(name: str, named, **hparams) -> torch.optim.Optimizer:
    """A registered optimizer, or ``"adamw_foreach"``: torch's multi-tensor AdamW with the same two
    weight-decay groups, the yardstick."""
    if name == "adamw_foreach":
        weight_decay = hparams.pop("weight_decay", 0.0)
        groups = NamedParameters.of(named).weight_decay_groups(weight_decay)
        return torch.optim.AdamW(groups, foreach=True, weight_decay=weight_decay, **hparams)
    return build_optimizer(named, name, **hparams)


def ops_per_step(name: str, n: int, device="cpu", **hparams) -> collections.Counter:
    """ATen ops of the third step of ``name`` on ``n`` tensors (state exists and masks are live)."""
    named = model_like(n, device)
    opt = build(name, named, **hparams)
    for _ in range(3):
        for _, p in named:
            p.grad = torch.randn_like(p)
        with OpCounter() as counter:
            opt.step()
    return counter.ops
