"""The torch.compile path computes what the eager path and the reference compute, without recompiles."""

import pytest
import torch

from alphaadam.optim import AlphaAdam, AlphaSGD
from alphaadam.optim.reference import ReferenceAlphaAdam, ReferenceAlphaSGD
from tests.optim_helpers import make_params, max_difference, run, two_groups

ADAM = dict(betas=(0.9, 0.95), eps=1e-8)


@pytest.mark.parametrize(
    "dtype,options",
    [
        (torch.float64, {}),
        (torch.float64, dict(mask="sync", compensation="cautious_nnz", mask_strict=False)),
        (torch.float32, {}),
    ],
)
def test_compiled_alphaadam_equals_reference(dtype, options):
    params = make_params(dtype)
    fast = run(AlphaAdam(two_groups(params), **ADAM, backend="compile", **options), params, 30)
    params = make_params(dtype)
    ref = run(ReferenceAlphaAdam(two_groups(params), **ADAM, **options), params, 30)
    assert max_difference(fast, ref) < (1e-12 if dtype == torch.float64 else 1e-5)


def test_compiled_alphasgd_equals_reference():
    params = make_params()
    fast = run(AlphaSGD(two_groups(params), momentum=0.9, backend="compile"), params, 30)
    params = make_params()
    ref = run(ReferenceAlphaSGD(two_groups(params), momentum=0.9), params, 30)
    assert max_difference(fast, ref) < 1e-12


def test_learning_rate_schedule_does_not_recompile():
    params = make_params(torch.float32, seed=3)
    opt = AlphaAdam(two_groups(params), **ADAM, backend="compile")
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    run(opt, params, 3, scheduler=schedule)
    torch._dynamo.utils.counters.clear()
    run(opt, params, 10, start=3, scheduler=schedule)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0
