"""AlphaAdam's and AlphaSGD's two passes as C kernels for CPU tensors, built on first use
(``native/masked_adam.c``).

Why by hand: on a CPU, the torch.compile path costs two compiled calls per tensor (about 85 µs each
of guards and wrappers, which GPT-2's 98 small tensors feel) and Inductor's loops for these passes
run well below ATen's fused AdamW on the same bytes; no kept library offers a masked Adam step with
a whole-tensor reduction between its passes. The C file handles every tensor of a step in one call
per pass, in parallel over fixed blocks (results do not depend on the thread count).

The library is compiled with the system C compiler (``$CC``, else ``cc``) into
``$ALPHAADAM_CACHE_DIR`` (default ``~/.cache/alphaadam``), once per source, compiler and CPU, for the
CPU it runs on (``-march=native``: AVX-512 where the CPU has it, AVX2 where not). ``$ALPHAADAM_MARCH``
names another target (e.g. ``x86-64-v3``, an AVX2-only build); a compiler that rejects ``-march``
gets a generic build.
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
# -fno-math-errno lets sqrt vectorise. -fno-trapping-math lets gcc turn the mask's select into a
# vector blend: without it the loops stay scalar on CPUs without AVX-512 (whose masked instructions
# cannot trap), 4-10x slower. Neither changes a result; no flag that reorders or approximates
# arithmetic is used.
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
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


def _attempts() -> list[list[str]]:
    """Flag sets to try in turn: OpenMP runs the blocks on torch's threads (a compiler without it
    still gives a serial kernel); a compiler without ``-march`` for this CPU gets a generic build."""
    march = [f"-march={os.environ.get('ALPHAADAM_MARCH', 'native')}"]
    return [FLAGS + march + ["-fopenmp"], FLAGS + march, FLAGS + ["-fopenmp"], FLAGS]


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled kernels; raises :class:`NativeUnavailable` with the reason when they cannot be built."""
    compiler = os.environ.get("CC", "cc")
    failures = []
    for flags in _attempts():
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
        sgd = getattr(lib, f"alphasgd_pass1_{suffix}")
        sgd.argtypes = [ctypes.c_int, pointers, pointers, pointers, address, address]
        sgd.argtypes += [ctypes.c_int, ctypes.c_int, ctypes.c_int, address, ctypes.c_int]
        pass1.restype = pass2.restype = sgd.restype = ctypes.c_int
    lib.alphaadam_isa.restype = ctypes.c_char_p
    return lib


def isa() -> str:
    """The vector extension the loaded kernels were built for: ``"avx512"``, ``"avx2"``, ...."""
    return library().alphaadam_isa().decode()


def _addresses(tensors: list[torch.Tensor]):
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _check(code: int) -> None:
    if code != 0:
        raise MemoryError("AlphaAdam's CPU kernel could not allocate its block table")


def _call(name: str, lists: tuple[list[torch.Tensor], ...], *args) -> None:
    """Run kernel ``name`` for the dtype of ``lists[0]``: ``(n, one address array per list, sizes,
    *args, threads)``; tensors in ``args`` pass their data pointer (and stay alive for the call)."""
    kernel = getattr(library(), f"{name}_{DTYPES[lists[0][0].dtype]}")
    sizes = torch.tensor([t.numel() for t in lists[0]], dtype=torch.int64)
    values = [a.data_ptr() if torch.is_tensor(a) else a for a in args]
    _check(kernel(len(lists[0]), *map(_addresses, lists), sizes.data_ptr(), *values, torch.get_num_threads()))


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
    hyper = hyper.to(torch.float64).contiguous()
    _call("alphaadam_pass1", (grads, exp_avgs, exp_avg_sqs), hyper, MASK_CODES[mask], int(strict), out)
    return out.unbind(1)


def apply_update(
    params: list[torch.Tensor], directions: list[torch.Tensor], step: torch.Tensor, decay: torch.Tensor
) -> None:
    """Pass 2: ``param <- param * decay - step * direction`` per tensor (``step``, ``decay``: vectors)."""
    step, decay = step.to(torch.float64).contiguous(), decay.to(torch.float64).contiguous()
    _call("alphaadam_pass2", (params, directions), step, decay)


# Per-tensor columns of AlphaSGD's table, in the order of the C file's SGD_* indices.
SGD_COLUMNS = ("momentum", "grad_weight", "weight_decay")


def sgd_direction_pass(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor],
    table: torch.Tensor,
    *,
    mask: str,
    strict: bool,
    weight_decay: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AlphaSGD's pass 1 over same-dtype tensors: update the momentum buffers in place (the buffer is
    the direction ``u``) and leave ``M * u`` in each gradient; :func:`apply_update` is pass 2.

    ``table`` is float64 (n, 3), columns :data:`SGD_COLUMNS`; ``weight_decay``: whether any tensor has
    a nonzero one (the kernel then reads the parameters to form ``g + wd * p``). Returns float64
    vectors ``sum u^2``, ``sum (M * u)^2`` and ``sum M``, one entry per tensor.
    """
    out = torch.zeros(len(params), 3, dtype=torch.float64)
    table = table.to(torch.float64).contiguous()
    codes = MASK_CODES[mask], int(strict), int(weight_decay)
    _call("alphasgd_pass1", (params, grads, buffers), table, *codes, out)
    return out.unbind(1)
