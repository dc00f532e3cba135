"""AlphaAdam's two passes as C kernels for CPU tensors, built on first use (``native/masked_adam.c``).

Why by hand: on a CPU, the torch.compile path costs two compiled calls per tensor (about 85 µs each
of guards and wrappers, which GPT-2's 98 small tensors feel) and Inductor's loops for these passes
run well below ATen's fused AdamW on the same bytes; no kept library offers a masked Adam step with
a whole-tensor reduction between its passes. The C file handles every tensor of a step in one call
per pass, in parallel over fixed blocks (results do not depend on the thread count).

The library is compiled with the system C compiler (``$CC``, else ``cc``) into
``$ALPHAADAM_CACHE_DIR`` (default ``~/.cache/alphaadam``), once per source, compiler and CPU.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("native") / "masked_adam.c"
# -fno-math-errno lets sqrt vectorise; no flag that reorders or approximates arithmetic is used.
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared"]
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
MASK_CODES = {"async": 0, "sync": 1, "none": 2}
# Per-tensor hyper-parameters of pass 1, in the order of the C file's HP_* indices.
HYPER_PARAMETERS = ("beta1", "beta2", "eps", "inv_bc1", "inv_bc2_sqrt")


class NativeUnavailable(RuntimeError):
    """The C kernels could not be built (no C compiler, or it failed)."""


def applies(param: torch.Tensor, *tensors: torch.Tensor) -> bool:
    """Whether the kernels can take this parameter: a contiguous CPU fp32/fp64 tensor whose gradient
    and state share its dtype. Never a DTensor (FSDP2) or other subclass: the kernels read raw memory."""
    dtype = param.dtype
    if not all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in (param, *tensors)):
        return False
    if param.device.type != "cpu" or dtype not in DTYPES or not param.is_contiguous():
        return False
    return all(t.dtype == dtype and t.layout == torch.strided and t.is_contiguous() for t in tensors)


def cache_dir() -> Path:
    return Path(os.environ.get("ALPHAADAM_CACHE_DIR", Path.home() / ".cache" / "alphaadam"))


def _cpu_flags() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    return next((line for line in lines if line.startswith(("flags", "Features"))), os.uname().machine)


def _compile(compiler: str, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so that concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True)
        if done.returncode != 0:
            raise NativeUnavailable(f"{compiler} failed: {done.stderr.strip()[:500]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled kernels; raises :class:`NativeUnavailable` with the reason when they cannot be built."""
    compiler = os.environ.get("CC", "cc")
    failures = []
    # OpenMP runs the blocks on torch's threads; a compiler without it still gives a serial kernel.
    for flags in (FLAGS + ["-fopenmp"], FLAGS):
        key = hashlib.sha256("\n".join([SOURCE.read_text(), compiler, *flags, _cpu_flags()]).encode())
        target = cache_dir() / f"masked_adam-{key.hexdigest()[:16]}.so"
        try:
            if not target.exists():
                _compile(compiler, flags, target)
            lib = ctypes.CDLL(str(target))
            break
        except (OSError, NativeUnavailable) as err:
            failures.append(str(err))
    else:
        raise NativeUnavailable(
            f"cannot build AlphaAdam's CPU kernels into {cache_dir()}: " + " | ".join(failures) + ". "
            "Install a C compiler (or set CC), set ALPHAADAM_CACHE_DIR to a writable folder, "
            "or pass backend='compile' / set ALPHAADAM_BACKEND=compile."
        )
    for suffix in DTYPES.values():
        pass1, pass2 = getattr(lib, f"alphaadam_pass1_{suffix}"), getattr(lib, f"alphaadam_pass2_{suffix}")
        pointers, address = ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p
        pass1.argtypes = [ctypes.c_int, pointers, pointers, pointers, address, address]
        pass1.argtypes += [ctypes.c_int, ctypes.c_int, address, ctypes.c_int]
        pass2.argtypes = [ctypes.c_int, pointers, pointers, address, address, address, ctypes.c_int]
        pass1.restype = pass2.restype = ctypes.c_int
    return lib


def _addresses(tensors: list[torch.Tensor]):
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _check(code: int) -> None:
    if code != 0:
        raise MemoryError("AlphaAdam's CPU kernel could not allocate its block table")


def adam_direction_pass(
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    hyper: torch.Tensor,
    *,
    mask: str,
    strict: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pass 1 over same-dtype tensors: update the moments in place, leave ``M * u`` in each gradient.

    ``hyper`` is a float64 (n, 5) table, columns :data:`HYPER_PARAMETERS`. Returns float64 vectors
    ``sum u^2``, ``sum (M * u)^2`` and ``sum M``, one entry per tensor.
    """
    out = torch.zeros(len(grads), 3, dtype=torch.float64)
    sizes = torch.tensor([g.numel() for g in grads], dtype=torch.int64)
    hyper = hyper.to(torch.float64).contiguous()
    kernel = getattr(library(), f"alphaadam_pass1_{DTYPES[grads[0].dtype]}")
    _check(
        kernel(
            len(grads),
            _addresses(grads),
            _addresses(exp_avgs),
            _addresses(exp_avg_sqs),
            sizes.data_ptr(),
            hyper.data_ptr(),
            MASK_CODES[mask],
            int(strict),
            out.data_ptr(),
            torch.get_num_threads(),
        )
    )
    return out.unbind(1)


def apply_update(
    params: list[torch.Tensor], directions: list[torch.Tensor], step: torch.Tensor, decay: torch.Tensor
) -> None:
    """Pass 2: ``param <- param * decay - step * direction`` per tensor (``step``, ``decay``: vectors)."""
    sizes = torch.tensor([p.numel() for p in params], dtype=torch.int64)
    step, decay = step.to(torch.float64).contiguous(), decay.to(torch.float64).contiguous()
    kernel = getattr(library(), f"alphaadam_pass2_{DTYPES[params[0].dtype]}")
    _check(
        kernel(
            len(params),
            _addresses(params),
            _addresses(directions),
            sizes.data_ptr(),
            step.data_ptr(),
            decay.data_ptr(),
            torch.get_num_threads(),
        )
    )
