"""4-bit asymmetric block quantisation (MicroAdam's error-feedback format), in plain PyTorch.

A flat tensor is cut into blocks of ``block_size`` elements (the last block may be shorter). Per
block: ``lo = min``, ``hi = max``, step ``u = (hi - lo) / 15``; each element is stored as the code
``floor((x - lo) / u + 1/2)`` in 0..15, two codes per byte (element 2i in the low nibble, 2i+1 in
the high one), and read back as ``code * u + lo``. The round-trip error is at most ``u / 2`` per
block. A constant block (``u = 0``) stores code 0 and reads back ``lo`` exactly.
"""

from __future__ import annotations

import math

import torch

LEVELS = 15  # 4 bits: codes 0..15


def _blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """(blocks, block_size) view, the last block padded with its own last element (min/max unchanged)."""
    pad = math.ceil(x.numel() / block_size) * block_size - x.numel()
    if pad:
        x = torch.cat([x, x[-1:].expand(pad)])
    return x.view(-1, block_size)


def quantize_4bit(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (uint8, ceil(d/2) bytes), block minima and block maxima of a 1-D tensor."""
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError("quantize_4bit takes a non-empty 1-D tensor")
    blocks = _blocks(x, block_size)
    lo, hi = torch.aminmax(blocks, dim=1)
    step = (hi - lo) / LEVELS
    step = torch.where(step > 0, step, torch.ones_like(step))
    scaled = (blocks - lo[:, None]).div_(step[:, None]).add_(0.5).floor_().clamp_(0, LEVELS)
    codes = scaled.to(torch.uint8).view(-1)[: x.numel()]
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    return codes[0::2] | (codes[1::2] << 4), lo, hi


def dequantize_4bit(
    packed: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, numel: int, block_size: int
) -> torch.Tensor:
    """The 1-D tensor of ``numel`` elements that :func:`quantize_4bit` encoded, in ``lo``'s dtype."""
    codes = torch.stack([packed & 0x0F, packed >> 4], dim=1).view(-1)
    blocks = lo.numel()
    pad = blocks * block_size - codes.numel()
    codes = torch.cat([codes, codes.new_zeros(pad)]) if pad > 0 else codes[: blocks * block_size]
    step = (hi - lo) / LEVELS
    values = torch.addcmul(lo[:, None], codes.view(blocks, block_size).to(lo.dtype), step[:, None])
    return values.view(-1)[:numel]


def quantized_bytes(numel: int, block_size: int, stat_bytes: int) -> int:
    """Bytes of the codes plus the per-block minima and maxima."""
    return math.ceil(numel / 2) + 2 * math.ceil(numel / block_size) * stat_bytes
