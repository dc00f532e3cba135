"""The C kernels of AlphaAdam's CPU step: blocks and threads, routing of the tensors they cannot take,
and what happens without a C compiler. (test_alphaadam.py runs every identity through them too.)"""

import pytest
import torch

from alphaadam.optim import AlphaAdam, AlphaSGD, kernels, native
from alphaadam.optim.reference import ReferenceAlphaAdam, ReferenceAlphaSGD
from tests.optim_helpers import make_params, max_difference, run, two_groups

ADAM = dict(betas=(0.9, 0.95), eps=1e-8)
# Larger than several of the kernel's 65536-element blocks, so that they run in parallel and a
# tensor's sums are put together from blocks; the odd sizes leave partial blocks and vector tails.
LARGE = [(640, 450), (1001,), (3, 5)]


def with_threads(threads: int, fn):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_blocked_kernels_equal_reference(dtype, tolerance):
    params = make_params(dtype, shapes=LARGE)
    fast = run(AlphaAdam(two_groups(params), **ADAM, backend="native"), params, 20)
    params = make_params(dtype, shapes=LARGE)
    ref = run(ReferenceAlphaAdam(two_groups(params), **ADAM), params, 20)
    assert max_difference(fast, ref) < tolerance


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_blocked_sgd_kernels_equal_reference(dtype, tolerance):
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=0.1)
    params = make_params(dtype, shapes=LARGE)
    fast = run(AlphaSGD(two_groups(params), **sgd, backend="native"), params, 20)
    params = make_params(dtype, shapes=LARGE)
    ref = run(ReferenceAlphaSGD(two_groups(params), **sgd), params, 20)
    assert max_difference(fast, ref) < tolerance


def test_results_do_not_depend_on_the_thread_count():
    def trajectory():
        params = make_params(torch.float32, shapes=LARGE)
        return run(AlphaAdam(two_groups(params), **ADAM, backend="native"), params, 10)

    assert max_difference(with_threads(1, trajectory), with_threads(2, trajectory)) == 0.0


def test_tensors_the_kernels_cannot_take_run_compiled_in_the_same_step():
    def params():
        contiguous = make_params(shapes=[(6, 5), (7,)])
        (matrix,) = make_params(seed=1, shapes=[(5, 4)])
        transposed = torch.nn.Parameter(matrix.detach().t())  # not contiguous
        return [*contiguous, transposed]

    native_params, eager_params = params(), params()
    assert not native.applies(native_params[2])
    fast = run(AlphaAdam(two_groups(native_params), **ADAM, backend="native"), native_params, 15)
    eager = run(AlphaAdam(two_groups(eager_params), **ADAM, backend="eager"), eager_params, 15)
    assert max_difference(fast, eager) < 1e-12


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("ALPHAADAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "_native_broken", False)
    native.library.cache_clear()
    yield
    native.library.cache_clear()


def test_native_backend_without_a_compiler_says_what_to_do(no_compiler):
    params = make_params()
    opt = AlphaAdam(params, backend="native")
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(native.NativeUnavailable, match="Install a C compiler"):
        opt.step()


def test_auto_backend_without_a_compiler_warns_and_falls_back(no_compiler, monkeypatch):
    monkeypatch.delenv("ALPHAADAM_BACKEND", raising=False)
    params = make_params()
    opt = AlphaAdam(two_groups(params), **ADAM)
    with pytest.warns(RuntimeWarning, match="Falling back to multi-tensor torch ops"):
        fast = run(opt, params, 3)
    params = make_params()
    ref = run(ReferenceAlphaAdam(two_groups(params), **ADAM), params, 3)
    assert max_difference(fast, ref) < 1e-12


def test_no_build_is_tried_when_no_tensor_fits_the_kernels(no_compiler, monkeypatch, recwarn):
    monkeypatch.delenv("ALPHAADAM_BACKEND", raising=False)
    (matrix,) = make_params(shapes=[(5, 4)])
    transposed = torch.nn.Parameter(matrix.detach().t())  # e.g. CUDA, bf16 or, here, not contiguous
    run(AlphaAdam([transposed], **ADAM), [transposed], 2)
    assert not [w for w in recwarn if "C compiler" in str(w.message)]
    assert not kernels._native_broken


def test_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ALPHAADAM_CACHE_DIR", str(tmp_path))
    native.library.cache_clear()
    try:
        native.library()
        built = list(tmp_path.iterdir())
        assert [p.suffix for p in built] == [".so"]
        stamp = built[0].stat().st_mtime_ns
        native.library.cache_clear()
        native.library()
        assert list(tmp_path.iterdir()) == built and built[0].stat().st_mtime_ns == stamp
    finally:
        native.library.cache_clear()
