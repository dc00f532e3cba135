"""Adapprox: full rank is RMSprop, the low-rank factors and their adaptive rank, memory, guidance."""

import pytest
import torch

from alphaadam.optim import Adapprox, build_optimizer
from alphaadam.optim.adapprox import low_rank_factors, state_numel
from tests.baseline_helpers import TinyGPT, apply_stream, tiny_llama, tiny_roberta
from tests.optim_helpers import make_params, max_difference, run

FACTORS = dict(min_rank=1, error_threshold=0.0, oversample=0, power_iters=2)


def full_rank_groups(params, **extra):
    """One group per tensor, with min_rank = max_rank = min(m, n) of the tensor seen as a matrix."""
    groups = []
    for p in params:
        rank = min(p.shape[0], p[0].numel()) if p.dim() >= 2 else 1
        groups.append({"params": [p], "max_rank": rank, "min_rank": rank, **extra})
    return groups


@pytest.mark.parametrize("lr", [1e-2, 3e-1])
def test_full_rank_without_momentum_clipping_or_guidance_is_rmsprop(lr):
    ours_params, theirs_params = make_params(), make_params()  # (6, 5), (7,), (4, 3, 2) in float64
    ours = Adapprox(full_rank_groups(ours_params), lr=lr, betas=(0.0, 0.95), eps=1e-6, clip_threshold=None)
    theirs = torch.optim.RMSprop(theirs_params, lr=lr, alpha=0.95, eps=1e-6)
    assert max_difference(run(ours, ours_params, 12), run(theirs, theirs_params, 12)) < 1e-12
    assert [q.shape[1] for q in (ours.state[p].get("factor_q") for p in ours_params) if q is not None] == [
        5,
        4,
    ]


def test_an_exactly_low_rank_matrix_is_recovered_at_its_rank():
    gen = torch.Generator().manual_seed(0)
    a, b = (
        torch.rand(30, 2, generator=gen, dtype=torch.float64),
        torch.rand(2, 20, generator=gen, dtype=torch.float64),
    )
    v = a @ b
    q, u = low_rank_factors(v, **{**FACTORS, "error_threshold": 1e-9}, max_rank=6, generator=gen)
    assert q.shape == (30, 2) and u.shape == (20, 2)
    torch.testing.assert_close(q @ u.T, v, rtol=0, atol=1e-12)
    torch.testing.assert_close(q.T @ q, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_the_rank_kept_is_the_smallest_whose_error_meets_the_threshold():
    gen = torch.Generator().manual_seed(1)
    left = torch.linalg.qr(torch.randn(40, 10, generator=gen, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(25, 10, generator=gen, dtype=torch.float64)).Q
    singular = torch.tensor([10.0, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01], dtype=torch.float64)
    v = left @ torch.diag(singular) @ right.T
    tail = [(singular[j:].square().sum() / singular.square().sum()).sqrt().item() for j in range(11)]
    for threshold in (0.3, 0.05, 0.01, 1e-3):
        expected = next(j for j in range(1, 11) if tail[j] <= threshold)
        q, u = low_rank_factors(v, **{**FACTORS, "error_threshold": threshold}, max_rank=10, generator=gen)
        assert q.shape[1] == expected
        error = ((v - q @ u.T).norm() / v.norm()).item()  # the prefix formula is the true error
        assert error == pytest.approx(tail[expected], rel=1e-9)
    q, _ = low_rank_factors(v, **{**FACTORS, "error_threshold": 1e-9}, max_rank=3, generator=gen)
    assert q.shape[1] == 3  # capped at max_rank
    q, _ = low_rank_factors(
        v, **{**FACTORS, "min_rank": 4, "error_threshold": 0.5}, max_rank=8, generator=gen
    )
    assert q.shape[1] == 4


def test_a_truncated_second_moment_with_negative_entries_gives_a_finite_step():
    gen = torch.Generator().manual_seed(2)
    v = torch.rand(12, 9, generator=gen, dtype=torch.float64) ** 4
    q, u = low_rank_factors(v, **FACTORS, max_rank=2, generator=gen)
    assert (q @ u.T).min() < 0  # why the update clamps V at zero
    w = torch.nn.Parameter(torch.zeros(12, 9, dtype=torch.float64))
    opt = Adapprox([w], lr=0.1, betas=(0.0, 0.999), max_rank=2)  # eps > 0 where V clamps to 0
    for step in range(4):
        w.grad = (torch.rand(12, 9, generator=gen, dtype=torch.float64) ** 4) * (step + 1)
        opt.step()
        assert torch.isfinite(w).all()


def test_state_is_the_low_rank_factors_and_the_optional_first_moment():
    for betas, first_moment in (((0.9, 0.999), True), ((0.0, 0.999), False)):
        model = TinyGPT()
        opt = build_optimizer(model, "adapprox", lr=1e-3, betas=betas, error_threshold=0.2)
        apply_stream(opt, list(model.named_parameters()), 3)
        for p in model.parameters():
            state = opt.state[p]
            numel = sum(v.numel() for k, v in state.items() if k != "step")
            if p.dim() == 2:
                rank = state["factor_q"].shape[1]
                assert 1 <= rank <= max(1, min(p.shape) // 4)
                assert numel == state_numel(*p.shape, rank, first_moment)
            else:
                assert numel == p.numel() * (2 if first_moment else 1)
        assert opt.ranks() == [opt.state[p]["factor_q"].shape[1] for p in model.parameters() if p.dim() == 2]
    assert state_numel(768, 3072, 1, True) / (2 * 768 * 3072) == pytest.approx(0.5, abs=1e-3)  # ~50% of Adam


def test_update_clipping_caps_the_step_rms():
    w = torch.nn.Parameter(torch.zeros(8, 6, dtype=torch.float64))
    w.grad = torch.randn(8, 6, dtype=torch.float64)
    Adapprox([w], lr=0.1, betas=(0.0, 0.5), clip_threshold=0.25).step()
    assert (w.norm() / 48**0.5).item() == pytest.approx(0.1 * 0.25, rel=1e-12)  # the first step has RMS ~1


def test_cosine_guidance_scales_the_momentum_step_by_its_agreement():
    def trajectory(guidance, beta1):
        params = make_params()
        opt = Adapprox(params, lr=1e-2, betas=(beta1, 0.99), cosine_guidance=guidance, max_rank=2)
        return run(opt, params, 4)

    plain, guided = trajectory(False, 0.9), trajectory(True, 0.9)
    assert max_difference(plain[:1], guided[:1]) == 0  # first step: M is parallel to M̂, cos = 1
    assert max_difference(plain[1:], guided[1:]) > 1e-6
    assert max_difference(trajectory(False, 0.0), trajectory(True, 0.0)) == 0  # no momentum: no effect


def test_the_same_seed_gives_the_same_trajectory():
    def trajectory(seed):
        params = make_params()
        return run(Adapprox(params, lr=1e-2, max_rank=1, error_threshold=0.0, seed=seed), params, 5)

    assert max_difference(trajectory(3), trajectory(3)) == 0
    assert max_difference(trajectory(3), trajectory(4)) > 0


def test_bad_settings_are_errors_naming_them():
    with pytest.raises(ValueError, match="min_rank=4 is larger than max_rank=2"):
        build_optimizer(TinyGPT(), "adapprox", min_rank=4, max_rank=2)
    with pytest.raises(ValueError, match="max_rank"):
        build_optimizer(TinyGPT(), "adapprox", max_rank=0)
    with pytest.raises(ValueError, match="power_iters"):
        build_optimizer(TinyGPT(), "adapprox", power_iters=-1)
    with pytest.raises(ValueError, match="cosine_guidance"):
        build_optimizer(TinyGPT(), "adapprox", cosine_guidance="yes")


@pytest.mark.parametrize("make", [tiny_roberta, tiny_llama])
def test_steps_every_model_family(make):
    model = make()
    opt = build_optimizer(model, "adapprox", lr=1e-3, weight_decay=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    apply_stream(opt, list(model.named_parameters()), 2)
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() and not torch.equal(a, p) for a, p in zip(before, after, strict=True))
