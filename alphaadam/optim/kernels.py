"""How the masked optimizers run their passes: C kernels on CPU, multi-tensor ops, or torch.compile.

Each pass is a plain function over the lists of one bucket of tensors (one param group, dtype and
device); string and bool options are compile-time constants.

``backend``: ``"native"`` (AlphaAdam's and CAdamW's C kernels, :mod:`alphaadam.optim.native`, for
contiguous fp32/fp64 CPU tensors; every other tensor runs as multi-tensor ops), ``"eager"`` (the
multi-tensor ``_foreach`` ops of :mod:`alphaadam.optim.multitensor` for every tensor: a fixed number
of ops per step whatever the number of tensors), ``"compile"`` (the same functions, each compiled
over the whole list by torch.compile), or ``"auto"`` (native where it applies, else eager; the C
kernels fall back with a warning when they cannot be built, e.g. without a C compiler). The
environment variable ``ALPHAADAM_BACKEND`` overrides ``"auto"``.
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
        warnings.warn(f"{err} Falling back to multi-tensor torch ops.", RuntimeWarning, stacklevel=3)
        return False
    return True


def run(fn: Callable, backend: str, *args, **kwargs):
    """Call ``fn`` under the resolved ``backend`` (compiled only for ``"compile"``)."""
    if backend != "compile":
        return fn(*args, **kwargs)
    compiled = _compiled.get(fn)
    if compiled is None:
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        compiled = _compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    return compiled(*args, **kwargs)
