"""Shared pieces of the optimizer tests: small parameter sets and reproducible gradient streams."""

from __future__ import annotations

import torch

SHAPES = [(6, 5), (7,), (4, 3, 2)]


def make_params(dtype=torch.float64, seed=0, shapes=SHAPES) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype)) for s in shapes]


def two_groups(params, **extra) -> list[dict]:
    """Two param groups with different learning rates and weight decays."""
    return [
        {"params": params[:1], "lr": 2e-2, "weight_decay": 0.1, **extra},
        {"params": params[1:], "lr": 5e-2, "weight_decay": 0.0, **extra},
    ]


def gradient(step: int, index: int, shape, dtype=torch.float64) -> torch.Tensor:
    """A gradient stream with a drift (so masks vary), exact zeros, and an all-zero step.

    Row 0 of every gradient is zero, which exercises in-mask zero directions of the non-strict
    mask; at step 23 tensor 1 gets an all-zero gradient, which empties its mask after step 1.
    """
    gen = torch.Generator().manual_seed(1000 * step + index)
    g = torch.randn(shape, generator=gen, dtype=torch.float64) + 0.3 * torch.sin(torch.tensor(step / 5.0))
    g.view(shape[0], -1)[0] = 0.0
    if step == 23 and index == 1:
        g.zero_()
    return g.to(dtype)


def run(optimizer, params, steps: int, start: int = 0, scheduler=None) -> list[list[torch.Tensor]]:
    """Apply ``steps`` steps of the gradient stream; returns the parameters after each step."""
    trajectory = []
    for t in range(start, start + steps):
        for i, p in enumerate(params):
            p.grad = gradient(t, i, p.shape, p.dtype)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trajectory.append([p.detach().clone() for p in params])
    return trajectory


def max_difference(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> float:
    return max(
        (x - y).abs().max().item() for xs, ys in zip(a, b, strict=True) for x, y in zip(xs, ys, strict=True)
    )
