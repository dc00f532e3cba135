"""Run the per-tensor passes eagerly or through torch.compile, or AlphaAdam's in C on CPU.

Each pass is a plain function over tensors; string and bool options are compile-time constants, so
torch.compile specialises one graph per option combination, dtype and rank (``dynamic=True`` keeps
sizes and float hyper-parameters symbolic: a learning-rate schedule never recompiles).

``backend``: ``"native"`` (AlphaAdam's and CAdamW's C kernels, :mod:`alphaadam.optim.native`, for
contiguous fp32/fp64 CPU tensors; every other tensor, and AlphaSGD, runs compiled), ``"compile"``
(torch.compile; Inductor generates fused C++ on CPU and Triton on CUDA), ``"eager"`` (the same
functions op by op), or ``"auto"`` (native where it applies, else compile; each falls back with a
warning when it cannot be built, e.g. without a C compiler). The environment variable
``ALPHAADAM_BACKEND`` overrides ``"auto"``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from alphaadam.optim import native

BACKENDS = ("auto", "native", "compile", "eager")

# Every option combination, dtype and None-vs-tensor argument is its own specialisation of a pass,
# so a process that uses several optimizer configurations (a test suite, a sweep run in-process)
# exceeds Dynamo's default of 8 graphs per function; each graph is still compiled only once.
RECOMPILE_LIMIT = 64

_compiled: dict[Callable, Callable] = {}
_compile_broken = False
_native_broken = False


def resolve_backend(backend: str | None) -> str:
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        backend = os.environ.get("ALPHAADAM_BACKEND", "auto")
        if backend not in BACKENDS:
            raise ValueError(f"ALPHAADAM_BACKEND={backend!r} is not one of {BACKENDS}")
    return backend


def native_enabled(backend: str) -> bool:
    """Whether AlphaAdam's C kernels serve this backend; builds them on first use."""
    global _native_broken
    if backend not in ("auto", "native") or (backend == "auto" and _native_broken):
        return False
    try:
        native.library()
    except native.NativeUnavailable as err:
        if backend == "native":
            raise
        _native_broken = True
        warnings.warn(f"{err} Falling back to torch.compile.", RuntimeWarning, stacklevel=3)
        return False
    return True


def run(fn: Callable, backend: str, *args, **kwargs):
    """Call ``fn`` under the resolved ``backend``."""
    global _compile_broken
    if backend == "eager" or (backend == "auto" and _compile_broken):
        return fn(*args, **kwargs)
    compiled = _compiled.get(fn)
    if compiled is None:
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        compiled = _compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    if backend in ("compile", "native"):
        return compiled(*args, **kwargs)
    try:
        return compiled(*args, **kwargs)
    except (torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.InductorError, OSError) as err:
        # Compilation fails before the kernel runs, so no tensor has been touched yet.
        _compile_broken = True
        warnings.warn(
            f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "the masked optimizers fall back to eager kernels, which are several times slower. "
            "Install a C++ compiler (CPU) or Triton (GPU), or set ALPHAADAM_BACKEND=eager to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return fn(*args, **kwargs)
