"""AlphaSGD: the same mask and compensation on SGD with momentum."""

import itertools

import pytest
import torch

from alphaadam.optim import AlphaSGD
from alphaadam.optim.reference import ReferenceAlphaSGD
from tests.optim_helpers import make_params, max_difference, run, two_groups

STEPS = 50


def trajectory(cls, steps=STEPS, sgd=None, backend="eager", **options):
    params = make_params()
    sgd = sgd or dict(momentum=0.9)
    extra = dict(backend=backend) if cls is AlphaSGD else {}
    opt = cls(two_groups(params), **sgd, **extra, **options)
    return run(opt, params, steps), opt


SGD_SETTINGS = [
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.1),
    dict(momentum=0.8, nesterov=True),
    dict(momentum=0.0),
]


BACKENDS = ("eager", "native")  # native: the C kernels (momentum > 0), else compiled as with "auto"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sgd", SGD_SETTINGS)
def test_unmasked_equals_torch_sgd(sgd, backend):
    ours, _ = trajectory(AlphaSGD, sgd=sgd, backend=backend, mask="none", compensation="none")
    params = make_params()
    reference = run(torch.optim.SGD(two_groups(params), **sgd, foreach=False), params, STEPS)
    assert max_difference(ours, reference) < 1e-13


@pytest.mark.parametrize(
    "mask,compensation,strict,empty",
    list(
        itertools.product(
            ("async", "sync"), ("norm_ratio", "cautious_mean", "none"), (True, False), ("full", "skip")
        )
    ),
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_equals_reference(mask, compensation, strict, empty, backend):
    options = dict(mask=mask, compensation=compensation, mask_strict=strict, empty_mask=empty)
    fast, opt = trajectory(AlphaSGD, backend=backend, **options)
    ref, ref_opt = trajectory(ReferenceAlphaSGD, **options)
    assert max_difference(fast, ref) < 1e-12
    for s_fast, s_ref in zip(opt.state.values(), ref_opt.state.values(), strict=True):
        assert s_fast["alpha"].item() == pytest.approx(s_ref["alpha"], rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nesterov_and_dampening_equal_reference(backend):
    for sgd in SGD_SETTINGS[1:3]:
        fast, _ = trajectory(AlphaSGD, sgd=sgd, backend=backend)
        ref, _ = trajectory(ReferenceAlphaSGD, sgd=sgd)
        assert max_difference(fast, ref) < 1e-12


def test_first_async_step_is_an_sgd_step():
    ours, _ = trajectory(AlphaSGD, steps=1)
    params = make_params()
    reference = run(torch.optim.SGD(two_groups(params), momentum=0.9, foreach=False), params, 1)
    assert max_difference(ours, reference) < 1e-15


def test_multitensor_path_leaves_gradients_intact():
    params = make_params()
    opt = AlphaSGD(params, lr=0.1, backend="eager")
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in params)


def test_c_kernels_leave_the_masked_direction_in_grad():
    params = make_params()
    opt = AlphaSGD(params, lr=0.1, momentum=0.9, weight_decay=0.1, backend="native")
    run(opt, params, 3)
    for p in params:
        buffer = opt.state[p]["momentum_buffer"]
        kept = p.grad != 0
        assert kept.any() and not kept.all()
        assert torch.equal(p.grad[kept], buffer[kept])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(momentum=0.0), "momentum > 0"),
        (dict(nesterov=True, dampening=0.5), "nesterov"),
        (dict(momentum=1.5), "momentum"),
        (dict(mask="random"), "mask"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlphaSGD(make_params(), lr=0.1, **kwargs)
