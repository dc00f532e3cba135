"""Adam-8bit through bitsandbytes: 8-bit states on CPU, closeness to AdamW, weight decay."""

import pytest
import torch

from alphaadam.optim import build_optimizer

pytest.importorskip("bitsandbytes")


def _model():
    torch.manual_seed(0)
    # one matrix large enough for 8-bit state (>= 4096 elements), one small matrix, one vector
    return torch.nn.Sequential(torch.nn.Linear(96, 128), torch.nn.Linear(128, 8))


def _grads(model, t):
    gen = torch.Generator().manual_seed(t)
    return [torch.randn(p.shape, generator=gen) * 0.1 + 0.01 for p in model.parameters()]


def test_states_are_uint8_with_one_absmax_per_256_elements():
    model = _model()
    opt = build_optimizer(model, "adam8bit", lr=1e-3)
    for p, g in zip(model.parameters(), _grads(model, 0), strict=True):
        p.grad = g
    opt.step()
    big = opt.state[model[0].weight]
    assert big["state1"].dtype == big["state2"].dtype == torch.uint8
    assert big["absmax1"].numel() == big["absmax2"].numel() == 128 * 96 // 256
    small = opt.state[model[1].weight]  # 1024 elements < min_8bit_size: fp32 state
    assert small["state1"].dtype == torch.float32


def test_trajectory_is_close_to_torch_adamw():
    model, twin = _model(), _model()
    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    ours = build_optimizer(model, "adam8bit", **hp)
    ref = build_optimizer(twin, "adamw", **hp)
    start = [p.detach().clone() for p in model.parameters()]
    for t in range(10):
        for a, b, g in zip(model.parameters(), twin.parameters(), _grads(model, t), strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    for a, b, s in zip(model.parameters(), twin.parameters(), start, strict=True):
        moved = (b - s).abs().max()
        assert (a - b).abs().max() < 0.05 * moved  # quantised moments: a few % of the distance moved
    # the small tensors keep fp32 state and match AdamW to float rounding
    assert torch.allclose(model[1].bias, twin[1].bias, atol=1e-6)


def test_weight_decay_is_passed_explicitly():
    model = _model()
    opt = build_optimizer(model, "adam8bit")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]  # not bitsandbytes' 1e-2
    opt = build_optimizer(model, "adam8bit", weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # ndim rule: biases spared
    # a zero gradient: only decay moves the decayed matrix, by exactly lr * wd
    before = model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(model[0].weight, before * (1 - 1e-3 * 0.1))
