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


def resolve_dtype(name: str, device: torch.device) -> str:
    """``auto``: bfloat16 on GPUs that support it, float16 on older GPUs, float32 on the CPU."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def make_precision(name: str, device: torch.device) -> Precision:
    name = resolve_dtype(name, device)
    scaler = torch.amp.GradScaler(device.type, enabled=name == "float16")
    return Precision(name, device.type, scaler)
