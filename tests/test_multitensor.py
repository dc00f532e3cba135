"""The multi-tensor step: a fixed number of ATen ops per step whatever the number of tensors, and no
read of a device value (the step never waits for a GPU). Identities are in test_alphaadam.py and
test_alphasgd.py, whose "eager" backend is this path."""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alphaadam.optim import build_optimizer

MASKED = ["alphaadam", "cadamw", "adamw_am", "adamw_sm", "alphasgd"]
SIZES = (16, 148, 600)  # GPT-2 has 148 parameter tensors


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def named_params(n: int, device="cpu"):
    gen = torch.Generator().manual_seed(n)
    shapes = [(4, 3), (5,)]  # matrices (weight decay) and vectors (none): two param groups
    return [
        (f"p{i}", torch.nn.Parameter(torch.randn(shapes[i % 2], generator=gen).to(device))) for i in range(n)
    ]


def build(name: str, named):
    if name == "adamw":  # torch's multi-tensor AdamW, the yardstick
        return torch.optim.AdamW([p for _, p in named], weight_decay=0.1, foreach=True)
    extra = dict(momentum=0.9) if name == "alphasgd" else {}
    return build_optimizer(named, name, weight_decay=0.1, backend="eager", **extra)


def ops_per_step(name: str, n: int) -> collections.Counter:
    named = named_params(n)
    opt = build(name, named)
    for _ in range(3):  # the count is taken at step 3: state exists and masks are live
        for _, p in named:
            p.grad = torch.randn_like(p)
        with OpCounter() as counter:
            opt.step()
    return counter.ops


@pytest.mark.parametrize("name", [*MASKED, "adamw"])
def test_ops_per_step_do_not_grow_with_the_number_of_tensors(name):
    counts = [ops_per_step(name, n) for n in SIZES]
    if name == "adamw":
        # torch reads each CPU step counter on the host (no device work); every other op is fixed.
        for c in counts:
            c.pop("aten._local_scalar_dense.default")
    assert counts[0] == counts[1] == counts[2], [sum(c.values()) for c in counts]


@pytest.mark.parametrize("name", MASKED)
def test_step_reads_no_device_value(name):
    # Meta tensors have no values: any .item(), .tolist() or data-dependent branch on one raises.
    named = named_params(6, device="meta")
    opt = build(name, named)
    for _ in range(3):
        for _, p in named:
            p.grad = torch.randn_like(p)
        opt.step()
    assert all(s["alpha"].device.type == "meta" for s in opt.state.values())
