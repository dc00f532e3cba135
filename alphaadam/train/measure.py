"""What a run measures about itself: throughput, model FLOPs utilisation, memory."""

from __future__ import annotations

import resource
import sys
import time

import torch

# Dense bf16/fp16 tensor-core peak per GPU (vendor datasheets, no sparsity), matched on the name
# torch reports; the first match wins. Pass trainer.peak_flops for anything else.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("A6000", 155e12),
    ("A10", 125e12),
    ("L4", 121e12),
    ("V100", 125e12),
    ("4090", 165e12),
    ("3090", 71e12),
)


def peak_flops(device: torch.device, dtype_name: str) -> float | None:
    """The device's peak FLOP/s for 16-bit training, when known (None on CPU and in float32)."""
    if device.type != "cuda" or dtype_name not in ("bfloat16", "float16"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (nested containers and objects included).

    A parameter's gradient is not state, even when the state refers to it (LDAdam's error buffer
    is ``p.grad`` between steps).
    """
    seen = {p.grad.untyped_storage().data_ptr() for p in optimizer.state if p.grad is not None}

    def size(obj, depth=0) -> int:
        if depth > 4:
            return 0
        if isinstance(obj, torch.Tensor):
            if obj.device.type == "meta":
                return obj.numel() * obj.element_size()
            key = obj.untyped_storage().data_ptr()
            if key in seen:
                return 0
            seen.add(key)
            return obj.untyped_storage().nbytes()
        if isinstance(obj, dict):
            return sum(size(v, depth + 1) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(size(v, depth + 1) for v in obj)
        if hasattr(obj, "__dict__") and not isinstance(obj, type):
            return sum(size(v, depth + 1) for v in vars(obj).values())
        return 0

    return sum(size(state) for state in optimizer.state.values())


def mask_stats_record(optimizer: torch.optim.Optimizer) -> dict:
    """Per-tensor alpha and mask density of a masked optimizer's last step, for metrics.jsonl
    (one device sync); empty for optimizers without ``mask_stats()``."""
    if not hasattr(optimizer, "mask_stats"):
        return {}
    stats = optimizer.mask_stats()
    if not stats:
        return {}
    return {
        "alpha_mean": sum(m.alpha for m in stats) / len(stats),
        "mask_density_mean": sum(m.density for m in stats) / len(stats),
        "mask_stats": [{"name": m.name, "alpha": m.alpha, "density": m.density} for m in stats],
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """Peak memory: the CUDA allocator's peak on a GPU, the process's peak resident size on a CPU."""
    if device.type == "cuda":
        return {"peak_bytes": torch.cuda.max_memory_allocated(device), "peak_kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_bytes": rss if sys.platform == "darwin" else rss * 1024, "peak_kind": "cpu_max_rss"}


class Throughput:
    """Training time and tokens (evaluation and checkpoints excluded), over the run and per window.

    The first step of a session is not counted: it pays for compilation and warm-up."""

    def __init__(self):
        self.total_s = self.total_tokens = self.total_samples = self.steps = 0
        self.window_s = self.window_tokens = 0
        self._skip_first = True
        self._t0 = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, tokens: int, samples: int = 0) -> float:
        """End a timed step of ``tokens`` tokens (and ``samples`` examples); returns its duration."""
        dt = time.perf_counter() - self._t0
        if self._skip_first:
            self._skip_first = False
            return dt
        self.total_s += dt
        self.total_tokens += tokens
        self.total_samples += samples
        self.steps += 1
        self.window_s += dt
        self.window_tokens += tokens
        return dt

    def window_rate(self) -> float | None:
        """Tokens per second since the last call (None when nothing was timed)."""
        rate = self.window_tokens / self.window_s if self.window_s > 0 else None
        self.window_s = self.window_tokens = 0
        return rate

    def summary(self, flops_per_token: float, world_size: int, peak: float | None) -> dict:
        if not self.steps:
            return {}
        tokens_per_s = self.total_tokens / self.total_s
        mfu = flops_per_token * tokens_per_s / world_size / peak if peak else None
        speed = {"tokens_per_s": tokens_per_s, "step_time_s": self.total_s / self.steps, "mfu": mfu}
        if self.total_samples:
            speed["samples_per_s"] = self.total_samples / self.total_s
        return speed


def memory_record(device: torch.device, optimizer, n_params: int) -> dict:
    """result.json's ``memory``: peak device memory and the optimizer state's size."""
    state_bytes = optimizer_state_bytes(optimizer)
    return {
        **peak_memory(device),
        "optimizer_state_bytes": state_bytes,
        "optimizer_state_bytes_per_param": state_bytes / n_params,
        "params": n_params,
    }
