"""AlphaAdam and CAdamW against torch.optim.AdamW, the slow reference, and docs/algorithm.md's identities."""

import itertools
import math

import pytest
import torch

from alphaadam.optim import AlphaAdam, CAdamW
from alphaadam.optim.reference import ReferenceAlphaAdam
from tests.optim_helpers import gradient, make_params, max_difference, run, two_groups

STEPS = 50
ADAM = dict(betas=(0.9, 0.95), eps=1e-8)


@pytest.fixture(params=["eager", "native"])
def backend(request):
    """Every test runs the per-tensor kernels (eager, the same functions that torch.compile compiles) and
    the C kernels that serve CPU tensors by default."""
    return request.param


def trajectory(cls, steps=STEPS, backend="eager", dtype=torch.float64, **options):
    params = make_params(dtype)
    kwargs = dict(backend=backend) if cls is not ReferenceAlphaAdam else {}
    opt = cls(two_groups(params), **ADAM, **kwargs, **options)
    return run(opt, params, steps), opt


def test_unmasked_equals_torch_adamw(backend):
    ours, _ = trajectory(AlphaAdam, backend=backend, mask="none", compensation="none")
    params = make_params()
    torch_traj = run(torch.optim.AdamW(two_groups(params), **ADAM, foreach=False), params, STEPS)
    assert max_difference(ours, torch_traj) < 1e-13


@pytest.mark.parametrize("options", [{}, dict(compensation="cautious_mean"), dict(mask_strict=False)])
def test_first_async_step_is_an_adamw_step(options, backend):
    ours, _ = trajectory(AlphaAdam, backend=backend, steps=1, **options)
    params = make_params()
    adamw = run(torch.optim.AdamW(two_groups(params), **ADAM, foreach=False), params, 1)
    assert max_difference(ours, adamw) < 1e-15


def test_disagreeing_coordinates_only_decay(backend):
    params = make_params()
    opt = AlphaAdam(two_groups(params), **ADAM, backend=backend)
    run(opt, params, 3)
    for t in range(3, 12):
        before = [p.detach().clone() for p in params]
        momentum = [opt.state[p]["exp_avg"].clone() for p in params]
        run(opt, params, 1, start=t)
        for group in opt.param_groups:
            decay = 1 - group["lr"] * group["weight_decay"]
            for p in group["params"]:
                i = next(k for k, q in enumerate(params) if q is p)
                off = momentum[i] * gradient(t, i, p.shape) <= 0
                assert off.any()
                assert torch.equal(p.detach()[off], before[i][off] * decay)
                assert not torch.equal(p.detach()[~off], before[i][~off] * decay)


def test_alpha_is_the_norm_ratio_and_at_least_one(backend):
    params = make_params()
    opt = AlphaAdam(two_groups(params), **ADAM, backend=backend)
    run(opt, params, 5)
    for t in range(5, 15):
        previous = [opt.state[p]["exp_avg"].clone() for p in params]
        run(opt, params, 1, start=t)
        for group in opt.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                i = next(k for k, q in enumerate(params) if q is p)
                state = opt.state[p]
                u = (state["exp_avg"] / (1 - beta1 ** (t + 1))) / (
                    (state["exp_avg_sq"] / (1 - beta2 ** (t + 1))).sqrt() + group["eps"]
                )
                mask = previous[i] * gradient(t, i, p.shape) > 0
                expected = (u.norm() / (u * mask).norm()).item()
                assert state["alpha"].item() == pytest.approx(expected, rel=1e-6)
                assert state["alpha"].item() >= 1.0
                assert state["mask_density"].item() == pytest.approx(mask.double().mean().item(), rel=1e-6)


MASK_GRID = list(
    itertools.product(
        ("async", "sync", "none"),
        ("norm_ratio", "cautious_mean", "cautious_nnz", "none"),
        (True, False),
        ("full", "skip"),
    )
)


@pytest.mark.parametrize("mask,compensation,strict,empty", MASK_GRID)
def test_fast_equals_reference(mask, compensation, strict, empty, backend):
    options = dict(mask=mask, compensation=compensation, mask_strict=strict, empty_mask=empty)
    fast, opt = trajectory(AlphaAdam, backend=backend, **options)
    ref, ref_opt = trajectory(ReferenceAlphaAdam, **options)
    assert max_difference(fast, ref) < 1e-12
    for p_fast, p_ref in zip(opt.state.values(), ref_opt.state.values(), strict=True):
        assert p_fast["alpha"].item() == pytest.approx(p_ref["alpha"], rel=1e-6)
        assert p_fast["mask_density"].item() == pytest.approx(p_ref["mask_density"], rel=1e-6)


# Other norm orders than 2 leave the C kernels for the compiled path: eager covers them here.
@pytest.mark.parametrize(
    "alpha_norm,alpha_max,backend",
    [
        (1, None, "eager"),
        (3.5, None, "eager"),
        (math.inf, None, "eager"),
        (2, 1.05, "eager"),
        (2, 1.05, "native"),
    ],
)
def test_norm_order_and_clamp_equal_reference(alpha_norm, alpha_max, backend):
    options = dict(alpha_norm=alpha_norm, alpha_max=alpha_max)
    fast, opt = trajectory(AlphaAdam, backend=backend, **options)
    ref, _ = trajectory(ReferenceAlphaAdam, **options)
    assert max_difference(fast, ref) < 1e-12
    if alpha_max is not None:
        assert max(s["alpha"].item() for s in opt.state.values()) == pytest.approx(alpha_max)


def test_empty_mask_rule_after_the_first_step(backend):
    # Step 23 gives tensor 1 an all-zero gradient: its mask is empty.
    full, opt_full = trajectory(AlphaAdam, backend=backend, steps=24)
    skip, opt_skip = trajectory(AlphaAdam, backend=backend, steps=24, empty_mask="skip")
    p_full, p_skip = full[-1][1], skip[-1][1]
    before_full, before_skip = full[-2][1], skip[-2][1]
    assert not torch.equal(p_full, before_full)  # the unmasked AdamW step moved it
    assert torch.equal(p_skip, before_skip)  # weight decay is 0 in this group: nothing moves
    assert list(opt_full.state.values())[1]["mask_density"].item() == 0.0


def test_cadamw_is_alphaadam_with_the_sync_mask(backend):
    cautious, _ = trajectory(CAdamW, backend=backend)
    alpha, _ = trajectory(
        AlphaAdam, backend=backend, mask="sync", compensation="cautious_mean", empty_mask="skip"
    )
    assert max_difference(cautious, alpha) == 0.0
    nnz, _ = trajectory(CAdamW, backend=backend, normalization="nnz")
    ref, _ = trajectory(ReferenceAlphaAdam, mask="sync", compensation="cautious_nnz", empty_mask="skip")
    assert max_difference(nnz, ref) < 1e-12


def test_lr_scheduler_drives_the_step(backend):
    def schedule(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 ** (t // 10))

    params = make_params()
    fast_opt = AlphaAdam(two_groups(params), **ADAM, backend=backend)
    fast = run(fast_opt, params, 30, scheduler=schedule(fast_opt))
    params = make_params()
    ref_opt = ReferenceAlphaAdam(two_groups(params), **ADAM)
    ref = run(ref_opt, params, 30, scheduler=schedule(ref_opt))
    assert max_difference(fast, ref) < 1e-12
    assert fast_opt.param_groups[0]["lr"] == pytest.approx(2e-2 * 0.5**3)


def test_parameters_without_grad_are_skipped(backend):
    params = make_params()
    opt = AlphaAdam(two_groups(params), **ADAM, backend=backend)
    frozen = params[2].detach().clone()
    for t in range(3):
        for i, p in enumerate(params[:2]):
            p.grad = gradient(t, i, p.shape)
        opt.step()
    assert torch.equal(params[2].detach(), frozen)
    assert params[2] not in opt.state


def test_c_kernels_leave_the_masked_direction_in_grad():
    params = make_params()
    opt = AlphaAdam(two_groups(params), **ADAM, backend="native")
    run(opt, params, 4)
    grads = [gradient(4, i, p.shape) for i, p in enumerate(params)]
    momentum = [opt.state[p]["exp_avg"].clone() for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()
    for p, g, m in zip(params, grads, momentum, strict=True):
        off = m * g <= 0
        assert off.any() and (~off).any()
        assert (p.grad[off] == 0).all() and (p.grad[~off] != 0).all()


def test_bf16_parameters_keep_fp32_state_and_track_fp32(backend):
    params32 = make_params(torch.float32)
    opt32 = AlphaAdam(two_groups(params32), **ADAM, backend=backend)
    ref = run(opt32, params32, 20)
    params16 = make_params(torch.bfloat16)
    opt16 = AlphaAdam(two_groups(params16), **ADAM, backend=backend)
    low = run(opt16, params16, 20)
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt16.state.values())
    assert all(p.dtype == torch.bfloat16 for p in params16)
    # bf16 keeps 8 mantissa bits: each step rounds parameters of size ~2 by up to 2^-7.
    assert max_difference([[x.float() for x in s] for s in low], ref) < 0.15
    assert max_difference(low[-1:], low[:1]) > 0.3  # and the parameters did move
    saved = opt16.state_dict()
    fresh = AlphaAdam(two_groups(params16), **ADAM, backend=backend)
    fresh.load_state_dict(saved)
    assert all(s["exp_avg"].dtype == torch.float32 for s in fresh.state.values())


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(0.9, 1.0)), "betas"),
        (dict(betas=(-0.1, 0.9)), "betas"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(mask="cautious"), "mask"),
        (dict(compensation="alpha"), "compensation"),
        (dict(empty_mask="zero"), "empty_mask"),
        (dict(alpha_norm=0), "alpha_norm"),
        (dict(alpha_max=0.5), "alpha_max"),
        (dict(backend="triton"), "backend"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        AlphaAdam(make_params(), **kwargs)


def test_invalid_group_override_is_caught():
    params = make_params()
    with pytest.raises(ValueError, match="mask"):
        AlphaAdam([{"params": params, "mask": "bogus"}])


def test_mask_stats_report_every_tensor_by_name(backend):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = AlphaAdam(list(model.named_parameters()), backend=backend)
    assert opt.mask_stats() == []
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    stats = opt.mask_stats()
    assert [s.name for s in stats] == [n for n, _ in model.named_parameters()]
    assert all(s.alpha >= 1.0 and 0.0 <= s.density <= 1.0 for s in stats)
    assert all(torch.is_tensor(opt.state[p]["alpha"]) for p in model.parameters())
