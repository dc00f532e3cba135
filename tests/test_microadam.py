"""MicroAdam: exact Adam at full density inside the window, the 4-bit quantiser, top-k, memory."""

import math

import pytest
import torch

from alphaadam.optim import build_optimizer
from alphaadam.optim.microadam import MicroAdam, state_bytes, topk_layout
from alphaadam.optim.quant4 import dequantize_4bit, quantize_4bit
from tests.baseline_helpers import TinyGPT, apply_stream

F64 = torch.float64
SHAPES = [(7, 5), (13,), (3, 4, 2)]


def _params(dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=F64).to(dtype)) for s in SHAPES]


def _grad(t, i, shape, dtype=F64):
    gen = torch.Generator().manual_seed(100 * t + i)
    return (torch.randn(shape, generator=gen, dtype=F64) + 0.2 * math.sin(t)).to(dtype)


def _run(opt, params, steps):
    out = []
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = _grad(t, i, p.shape, p.dtype)
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


def test_full_density_equals_adam_while_the_window_holds_every_gradient():
    m = 6
    ours, ref = _params(), _params()
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    micro = MicroAdam(ours, m=m, density=1.0, quant_block_size=4, **hp)
    adam = torch.optim.AdamW(ref, foreach=False, **hp)
    a, b = _run(micro, ours, m + 3), _run(adam, ref, m + 3)
    gaps = [
        max((x - y).abs().max().item() for x, y in zip(xs, ys, strict=True))
        for xs, ys in zip(a, b, strict=True)
    ]
    assert max(gaps[:m]) < 1e-14  # t <= m: Adam exactly (up to float64 rounding)
    assert gaps[m] > 1e-6  # t = m + 1: the oldest gradient has left the window


def test_quantiser_round_trip_within_half_a_step_per_block():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=gen, dtype=F64) * torch.linspace(0.1, 10, 1000, dtype=F64)
    x[128:192] = 3.5  # a constant block: step 0, stored exactly
    for block in (64, 100, 1000, 7):
        codes, lo, hi = quantize_4bit(x, block)
        assert codes.dtype == torch.uint8 and codes.numel() == 500
        back = dequantize_4bit(codes, lo, hi, x.numel(), block)
        step = ((hi - lo) / 15).repeat_interleave(block)[: x.numel()]
        assert ((x - back).abs() <= step / 2 + 1e-12).all()
    codes, lo, hi = quantize_4bit(x, 64)
    assert torch.equal(dequantize_4bit(codes, lo, hi, 1000, 64)[128:192], x[128:192])
    # odd length, a single element, fp32 and bf16-range inputs
    for y in (torch.randn(7), torch.tensor([2.5]), torch.zeros(5)):
        codes, lo, hi = quantize_4bit(y, 4)
        back = dequantize_4bit(codes, lo, hi, y.numel(), 4)
        step = ((hi - lo) / 15).repeat_interleave(4)[: y.numel()]
        assert ((y - back).abs() <= step / 2 + 1e-6).all()


def test_topk_per_block_and_error_feedback_identity():
    d, block, density = 1000, 300, 0.05  # 3 full blocks of 300 (k = 15) and one of 100 (k = 5)
    assert topk_layout(d, block, density) == (300, 3, 15, 5)
    p = torch.nn.Parameter(torch.zeros(d, dtype=F64))
    opt = MicroAdam([p], m=4, density=density, topk_block_size=block, quant_block_size=50)
    g = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=F64)
    p.grad = g.clone()
    opt.step()
    state = opt.state[p]
    local = state["indices"][0].long()
    assert state["indices"].dtype == torch.int16 and local.numel() == 3 * 15 + 5
    starts = torch.tensor([0] * 15 + [300] * 15 + [600] * 15 + [900] * 5)
    chosen = local + starts
    for b, (lo_, hi_) in enumerate([(0, 300), (300, 600), (600, 900), (900, 1000)]):
        picked = chosen[(starts == lo_)]
        expected = g[lo_:hi_].abs().topk(picked.numel()).indices + lo_
        assert set(picked.tolist()) == set(expected.tolist()), b
    assert torch.equal(state["values"][0], g[chosen])
    assert torch.equal(p.grad, g)  # the gradient is left alone
    # the error is a - topk(a), stored within half a quantisation step
    residual = g.clone()
    residual[chosen] = 0
    error = dequantize_4bit(state["error_codes"], state["error_min"], state["error_max"], d, 50)
    step = ((state["error_max"] - state["error_min"]) / 15).repeat_interleave(50)
    assert ((error - residual).abs() <= step / 2 + 1e-12).all()
    # the update touched exactly the chosen coordinates
    assert set(torch.nonzero(p.detach()).view(-1).tolist()) == set(chosen.tolist())


def test_error_feedback_enters_the_next_selection():
    p = torch.nn.Parameter(torch.zeros(10, dtype=F64))
    opt = MicroAdam([p], m=3, density=0.1, quant_block_size=10)  # k = 1
    p.grad = torch.tensor([5.0, 4.0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=F64)
    opt.step()
    p.grad = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 1.0], dtype=F64)
    opt.step()  # a = g + error = [0, ~4, ..., 1]: the error's 4 wins over the fresh 1
    assert opt.state[p]["indices"][1, 0].item() == 1


def test_state_bytes_per_parameter_as_designed():
    model = TinyGPT(vocab_size=64, n_layer=1, n_embd=32)
    opt = build_optimizer(model, "microadam", m=10, density=0.01, quant_block_size=64)
    apply_stream(opt, list(model.named_parameters()), 1)
    measured = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    assert measured == sum(
        state_bytes(p.numel(), p.dtype, m=10, density=0.01, topk_block_size=20864, quant_block_size=64)
        for p in model.parameters()
    )
    # large-tensor limit: 10 * 1 % * (2 + 4) = 0.6 (window) + 0.5 (codes) + 8 / 64 (min, max)
    per = state_bytes(2**20, torch.float32, m=10, density=0.01, topk_block_size=20864, quant_block_size=64)
    assert per / 2**20 == pytest.approx(0.6 + 0.5 + 0.125, abs=2e-3)
    per = state_bytes(2**20, torch.bfloat16, m=10, density=0.01, topk_block_size=20864, quant_block_size=64)
    assert per / 2**20 == pytest.approx(0.4 + 0.5 + 0.125, abs=2e-3)


def test_bf16_values_and_fp32_error_bounds():
    params = _params(torch.bfloat16)
    opt = MicroAdam(params, lr=1e-2, m=3, density=0.2, quant_block_size=8)
    _run(opt, params, 4)
    state = opt.state[params[0]]
    assert state["values"].dtype == torch.bfloat16 and state["error_min"].dtype == torch.float32
    assert all(torch.isfinite(p.float()).all() for p in params)


def test_alpha_densifies_the_update():
    p = torch.nn.Parameter(torch.zeros(50, dtype=F64))
    opt = MicroAdam([p], m=2, density=0.1, alpha=0.5, quant_block_size=50)
    p.grad = torch.randn(50, generator=torch.Generator().manual_seed(3), dtype=F64)
    opt.step()
    assert (p.detach() != 0).sum() > 5  # more than the 5 top-k coordinates moved


def test_argument_checks():
    p = torch.nn.Parameter(torch.zeros(4))
    for kwargs, word in [
        (dict(m=0), "m=0"),
        (dict(density=0.0), "density"),
        (dict(density=1.5), "density"),
        (dict(topk_block_size=40000), "topk_block_size"),
        (dict(quant_block_size=0), "quant_block_size"),
        (dict(alpha=1.0), "alpha"),
        (dict(lr=-1.0), "lr"),
        (dict(betas=(0.9, 1.0)), "betas"),
    ]:
        with pytest.raises(ValueError, match=word):
            MicroAdam([p], **kwargs)
