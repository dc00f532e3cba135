"""Mixed precision: an autocast context and, for float16, a gradient scaler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Precision:
    name: str
    device_type: str
    scaler: torch.amp.GradScaler

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self):
        if self.name == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def unscale_and_clip(self, model: torch.nn.Module, optimizer, max_norm: float) -> torch.Tensor:
        """Unscale the gradients, clip them to ``max_norm`` (0: no clipping) and return their total
        norm before clipping. Call before ``optimizer.step()``: masked optimizers overwrite p.grad."""
        self.scaler.unscale_(optimizer)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm)
        return norm


def resolve_dtype(name: str, device: torch.device) -> str:
    """``auto``: bfloat16 on GPUs that support it, float16 on older GPUs, float32 on the CPU."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def make_precision(name: str, device: torch.device) -> Precision:
    """The precision ``name`` asks for on ``device``; on a GPU, float32 matrix products that remain
    (outside autocast, or in float32 runs) use TF32 tensor cores."""
    name = resolve_dtype(name, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    scaler = torch.amp.GradScaler(device.type, enabled=name == "float16")
    return Precision(name, device.type, scaler)
