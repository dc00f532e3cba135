"""SinkGD and SWAN: the normalisations' identities, statelessness on matrices, AdamW elsewhere."""

import math

import pytest
import torch

from alphaadam.optim import SWAN, SinkGD, build_optimizer
from alphaadam.optim.families import lowrank_targets
from alphaadam.optim.param_groups import NamedParameters
from alphaadam.optim.sinkgd import sr_sinkhorn
from alphaadam.optim.swan import grad_norm_rows, swan_direction
from tests.baseline_helpers import TinyGPT, gradient_stream, tiny_llama, tiny_roberta


def badly_scaled(m=64, n=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(m, n, generator=gen, dtype=torch.float64)
    rows = torch.logspace(-3, 3, m, dtype=torch.float64)[:, None]
    cols = torch.logspace(-2, 2, n, dtype=torch.float64)[None, :]
    return g * rows * cols


@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_sinkhorn_columns_have_norm_sqrt_m_and_rms_one(iterations):
    x = sr_sinkhorn(badly_scaled(), iterations)
    torch.testing.assert_close(
        x.norm(dim=0), torch.full((256,), 8.0, dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert (x.norm() / math.sqrt(x.numel())).item() == pytest.approx(1.0, abs=1e-12)


def test_sinkhorn_rows_converge_to_sqrt_n():
    errors = [(sr_sinkhorn(badly_scaled(), L).norm(dim=1) / 16.0 - 1).abs().max().item() for L in (1, 3, 10)]
    assert errors[0] > 1e-2 and errors[1] < errors[0] and errors[2] < 1e-9


def test_sinkhorn_of_a_rank_one_gradient_is_the_sign_pattern():
    gen = torch.Generator().manual_seed(1)
    u, v = (
        torch.randn(5, generator=gen, dtype=torch.float64),
        torch.randn(7, generator=gen, dtype=torch.float64),
    )
    expected = torch.outer(u.sign(), v.sign())
    torch.testing.assert_close(sr_sinkhorn(torch.outer(u, v), 1), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sr_sinkhorn(torch.outer(u, v), 6), expected, rtol=1e-12, atol=1e-12)


def test_squared_iterate_is_the_sinkhorn_knopp_iterate_of_the_squared_gradient():
    g = badly_scaled(6, 9, seed=2)
    m, n = g.shape
    p = g * g
    for _ in range(3):  # Sinkhorn–Knopp: row sums n, then column sums m
        p = p * (n / p.sum(dim=1, keepdim=True))
        p = p * (m / p.sum(dim=0, keepdim=True))
    torch.testing.assert_close(sr_sinkhorn(g, 3).square(), p, rtol=1e-12, atol=1e-14)


def test_sinkhorn_invariances():
    g = badly_scaled(8, 12, seed=3)
    f = lambda x, L=2: sr_sinkhorn(x, L)  # noqa: E731
    torch.testing.assert_close(f(37.5 * g), f(g), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(f(-g), -f(g), rtol=0, atol=0)
    rows = torch.rand(8, 1, dtype=torch.float64) + 0.1
    torch.testing.assert_close(f(rows * g), f(g), rtol=1e-12, atol=1e-13)  # exact at any L
    cols = torch.rand(1, 12, dtype=torch.float64) + 0.1
    assert not torch.allclose(f(g * cols, 1), f(g, 1))
    torch.testing.assert_close(f(g * cols, 200), f(g, 200), rtol=1e-8, atol=1e-9)  # only in the limit


def test_swan_update_is_the_polar_factor_of_the_standardised_gradient():
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(16, 48, generator=gen, dtype=torch.float64) * torch.linspace(
        0.5, 3, 48, dtype=torch.float64
    )
    normed = grad_norm_rows(g)
    torch.testing.assert_close(normed.mean(dim=1), torch.zeros(16, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(normed.var(dim=1, unbiased=False), torch.ones(16, dtype=torch.float64))
    left, _, right = torch.linalg.svd(normed, full_matrices=False)
    polar = left @ right
    update = swan_direction(g, ns_steps=30, rms_scale=False)
    torch.testing.assert_close(update, polar, rtol=0, atol=1e-10)
    torch.testing.assert_close(update @ update.T, torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-10)
    # a tall gradient is whitened on its transpose; rms_scale gives RMS 1
    tall = swan_direction(g.T, ns_steps=30, rms_scale=True)
    torch.testing.assert_close(tall, polar.T * math.sqrt(48), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["sinkgd", "swan"])
@pytest.mark.parametrize("make", [TinyGPT, tiny_roberta, tiny_llama])
def test_matrices_are_stateless_and_the_rest_is_adamw(name, make):
    model = make().double()
    named = list(model.named_parameters())
    matrices = lowrank_targets(NamedParameters.of(model))
    twin = make().double()
    twin.load_state_dict(model.state_dict())
    opt = build_optimizer(model, name, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    rest = [p for n, p in twin.named_parameters() if n not in matrices]
    reference = torch.optim.AdamW(
        [
            {"params": [p for p in rest if p.dim() >= 2]},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0},
        ],
        lr=1e-2,
        weight_decay=0.1,
        betas=(0.9, 0.95),
    )
    twin_named = [(n, p) for n, p in twin.named_parameters() if n not in matrices]
    for step in range(5):
        grads = gradient_stream(named, step)
        for n, p in named:
            p.grad = grads[n].clone()
        for n, p in twin_named:
            p.grad = grads[n].clone()
        opt.step()
        reference.step()
    params = dict(model.named_parameters())
    for n, p in twin_named:
        torch.testing.assert_close(params[n], p, rtol=1e-12, atol=1e-14)
    assert matrices and all(not opt.state.get(params[n]) for n in matrices)
    assert all(set(opt.state[params[n]]) == {"step", "exp_avg", "exp_avg_sq"} for n, _ in twin_named)


@pytest.mark.parametrize("cls", [SinkGD, SWAN])
def test_matrix_step_is_lr_times_ratio_times_the_direction(cls):
    gen = torch.Generator().manual_seed(5)
    w = torch.nn.Parameter(torch.randn(6, 10, generator=gen, dtype=torch.float64))
    start = w.detach().clone()
    w.grad = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    opt = cls([w], lr=0.1, lr_ratio=0.5, weight_decay=0.2)
    opt.step()
    direction = opt.direction(w.grad, opt.param_groups[0])
    torch.testing.assert_close(
        w.detach(), start * (1 - 0.05 * 0.2) - 0.05 * direction, rtol=1e-14, atol=1e-15
    )
    assert not opt.state


def test_bad_settings_are_errors_naming_them():
    with pytest.raises(ValueError, match="iterations"):
        build_optimizer(TinyGPT(), "sinkgd", iterations=0)
    with pytest.raises(ValueError, match="ns_steps"):
        build_optimizer(TinyGPT(), "swan", ns_steps=0)
    with pytest.raises(ValueError, match="lr_ratio"):
        build_optimizer(TinyGPT(), "swan", lr_ratio=-1.0)
    with pytest.raises(ValueError, match=r"matrices only.*normalized=False"):
        SinkGD([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="no parameter matches"):
        build_optimizer(TinyGPT(), "sinkgd", targets=["nothing_like_this"])
