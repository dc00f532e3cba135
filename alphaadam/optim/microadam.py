"""MicroAdam (Modoranu et al., NeurIPS 2024, arXiv 2405.15593), written here in plain PyTorch.

The reference (PyPI ``ista-daslab-optimizers``, IST-DASLab) runs CUDA kernels on bf16 tensors only;
this implementation follows the same algorithm with ordinary tensor operations, for any floating
dtype and device. Per parameter tensor (d elements, flattened), at its step t = 1, 2, ...:

1. a = g + Q^-1(e): the gradient plus the dequantised error feedback.
2. Top-k by magnitude **per block** of ``topk_block_size`` elements (the last block may be shorter),
   k = ceil(density * block); block-local offsets (int16) and values go to slot (t-1) mod m of a
   ring buffer of the last m sparse gradients.
3. The chosen entries of a are zeroed; the rest is the new error, e = Q(a), stored with 4 bits per
   element (:mod:`alphaadam.optim.quant4`, blocks of ``quant_block_size``).
4. theta <- theta (1 - lr wd).
5. Adam statistics recomputed from the window: with age = (t-1-slot) mod m over the min(t, m)
   filled slots, M = sum beta1^age V (scattered at I), S = sum beta2^age V^2;
   u = c1 M / (sqrt(c2 S) + eps), c1 = (1-beta1)/(1-beta1^t), c2 = (1-beta2)/(1-beta2^t).
   This is bias-corrected Adam over the last m sparse gradients: at density 1 and t <= m it *is*
   Adam.
6. Optional ``alpha > 0`` (the reference's pre-training variant): u += alpha Q^-1(e), and the error
   keeps (1 - alpha) of itself.
7. theta <- theta - lr u (non-zero only where the window has entries, unless alpha > 0).

Differences from the reference, all about storage, none about the update rule:

* Ring-buffer values are stored in the parameter's dtype (the reference always uses bf16, the only
  dtype its kernels take); with bf16 parameters the two coincide.
* The error's block minima and maxima are stored in fp32 (fp64 for fp64 parameters) instead of
  bf16, so that the round trip is within half a step of the stored grid; this costs 8 bytes per
  quantisation block (0.125 bytes/parameter at the GSM8K setting quant_block_size = 64).
* One step counter per tensor instead of one per optimizer (the same whenever every parameter gets
  a gradient at every step; a skipped step does not age a tensor's window).
* The top-k block is an argument (default 20864); the reference derives it from the GPU's shared
  memory per SM: (KiB - 1) * 1024 / 4 / 2 = 20864 floats on an A100 (164 KiB), 29056 on an H100.

State per tensor, in bytes per parameter: m * k/d * (2 + value bytes) for the window, 1/2 for the
error codes, 2 * stat bytes / quant_block_size for the minima and maxima; at m = 10, density 1 %:
0.2 + 0.4 (fp32 values) or 0.2 (bf16) + 0.5 + stats. See :func:`state_bytes`.
"""

from __future__ import annotations

import math

import torch

from alphaadam.optim import sharding
from alphaadam.optim.base import state_dtype
from alphaadam.optim.common import (
    KeepsStateDtypes,
    check_adam_group,
    check_number,
    check_positive_int,
    evaluate_closure,
    param_name,
    params_with_grad,
)
from alphaadam.optim.quant4 import dequantize_4bit, quantize_4bit, quantized_bytes

MAX_TOPK_BLOCK = 32768  # block-local offsets are stored as int16


def topk_layout(numel: int, block_size: int, density: float) -> tuple[int, int, int, int]:
    """(block, full blocks, k per full block, k of the shorter last block) for a tensor of ``numel``."""
    block = max(1, min(block_size, numel))  # an empty tensor (FSDP2 shard) has no blocks
    full = numel // block
    tail = numel - full * block
    return block, full, math.ceil(density * block), math.ceil(density * tail) if tail else 0


def state_bytes(
    numel: int, dtype: torch.dtype, *, m: int, density: float, topk_block_size: int, quant_block_size: int
) -> int:
    """Bytes of MicroAdam's state for one tensor (as allocated by :class:`MicroAdam`)."""
    _, full, k_many, k_few = topk_layout(numel, topk_block_size, density)
    k = full * k_many + k_few
    value_bytes = torch.empty((), dtype=dtype).element_size()
    stat_bytes = torch.empty(
        (), dtype=torch.float64 if dtype == torch.float64 else torch.float32
    ).element_size()
    step_bytes = 4
    return m * k * (2 + value_bytes) + quantized_bytes(numel, quant_block_size, stat_bytes) + step_bytes


class MicroAdam(KeepsStateDtypes, torch.optim.Optimizer):
    """MicroAdam: Adam over a window of the last ``m`` top-k sparse gradients, 4-bit error feedback.

    Args:
        m: window length (number of sparse gradients kept).
        density: fraction of each top-k block kept (the reference's ``k_init``; 1 % in the paper).
        topk_block_size: elements per top-k block (at most 32768, offsets are int16).
        quant_block_size: elements per quantisation block of the error feedback (64 in the
            reference's GSM8K run, 100000 in its GLUE runs).
        alpha: fraction of the error added to the update each step (0 = the fine-tuning algorithm).

    ``step()`` leaves ``p.grad`` untouched.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        m: int = 10,
        density: float = 0.01,
        topk_block_size: int = 20864,
        quant_block_size: int = 64,
        alpha: float = 0.0,
    ):
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            m=m,
            density=density,
            topk_block_size=topk_block_size,
            quant_block_size=quant_block_size,
            alpha=alpha,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_adam_group(group)
        check_positive_int("m", group["m"])
        check_number("density", group["density"], 0.0, 1.0)
        if group["density"] == 0:
            raise ValueError("density=0 keeps no gradient entries; it must be in (0, 1]")
        check_positive_int("topk_block_size", group["topk_block_size"])
        if group["topk_block_size"] > MAX_TOPK_BLOCK:
            raise ValueError(
                f"topk_block_size={group['topk_block_size']} must be at most {MAX_TOPK_BLOCK} (int16 offsets)"
            )
        check_positive_int("quant_block_size", group["quant_block_size"])
        check_number("alpha", group["alpha"], 0.0, 1.0, high_open=True)
        for p in group["params"]:
            if not p.is_floating_point():
                raise ValueError(f"MicroAdam needs floating-point parameters, got {p.dtype}")

    def _init_state(self, group: dict, p: torch.Tensor, state: dict) -> None:
        p = sharding.local(p)  # under FSDP2, the rank's shard: top-k and quantisation blocks are shard-local
        d = p.numel()
        _, full, k_many, k_few = topk_layout(d, group["topk_block_size"], group["density"])
        k = full * k_many + k_few
        stats = state_dtype(p)
        nq = math.ceil(d / group["quant_block_size"])
        state["step"] = torch.tensor(0.0)
        state["indices"] = torch.zeros(group["m"], k, dtype=torch.int16, device=p.device)
        state["values"] = torch.zeros(group["m"], k, dtype=p.dtype, device=p.device)
        state["error_codes"] = torch.zeros(math.ceil(d / 2), dtype=torch.uint8, device=p.device)
        state["error_min"] = torch.zeros(nq, dtype=stats, device=p.device)
        state["error_max"] = torch.zeros(nq, dtype=stats, device=p.device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group, index, p in params_with_grad(self):
            state = self.state[p]
            if not state:  # also on an empty FSDP2 shard: every rank holds state for every tensor
                self._init_state(group, p, state)
            if sharding.local(p).numel():
                self._update(group, index, p, state)
        return loss

    def state_dict(self) -> dict:
        # Under FSDP2 the state follows the rank's shard: it is saved as one row per rank (DTensors).
        return sharding.per_rank_state_as_dtensors(self, super().state_dict())

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(sharding.per_rank_state_from_dtensors(self, state_dict, self._layout))

    def _layout(self, group: dict, p: torch.Tensor) -> dict:
        """The state this rank has, or would make, for ``p``."""
        if self.state.get(p):
            return self.state[p]
        state = {}
        self._init_state(group, p, state)
        return state

    def _update(self, group: dict, index: int, p: torch.Tensor, state: dict) -> None:
        p, grad = sharding.local(p), sharding.local(p.grad)
        d = p.numel()
        m, qbs = group["m"], group["quant_block_size"]
        block, full, k_many, k_few = topk_layout(d, group["topk_block_size"], group["density"])
        indices, values = state["indices"], state["values"]
        if indices.shape != (m, full * k_many + k_few):
            raise ValueError(
                f"MicroAdam state of {param_name(group, index)} has shape {tuple(indices.shape)}, "
                f"but m, density and topk_block_size ask for {(m, full * k_many + k_few)}"
            )
        beta1, beta2 = group["betas"]
        lr, eps, alpha = group["lr"], group["eps"], group["alpha"]
        lo, hi = state["error_min"], state["error_max"]
        cdtype = lo.dtype
        state["step"] += 1
        t = int(state["step"].item())
        slot = (t - 1) % m

        # 1. gradient + dequantised error
        a = dequantize_4bit(state["error_codes"], lo, hi, d, qbs)
        a.add_(grad.reshape(-1))

        # 2. top-k per block into the ring buffer
        magnitude = a.abs()
        local = [
            magnitude[: full * block].view(full, block).topk(k_many, dim=1, sorted=False).indices.view(-1)
        ]
        if k_few:
            local.append(magnitude[full * block :].topk(k_few, sorted=False).indices)
        local = torch.cat(local) if len(local) > 1 else local[0]
        offsets = self._block_offsets(full, block, k_many, k_few, p.device)
        chosen = local + offsets
        indices[slot] = local.to(torch.int16)
        values[slot] = a[chosen].to(values.dtype)

        # 3. the rest is the new error, stored in 4 bits
        a[chosen] = 0
        codes, new_lo, new_hi = quantize_4bit(a, qbs)
        del a, magnitude

        # 4. decoupled weight decay
        p.mul_(1 - lr * group["weight_decay"])

        # 5. Adam statistics from the window (dense sums; the update is computed where the window
        #    has entries, the only coordinates where it is not zero)
        filled = min(t, m)
        rows = torch.arange(filled, device=p.device)
        ages = ((slot - rows) % m).to(cdtype)
        where = (indices[:filled].long() + offsets).view(-1)
        window = values[:filled].to(cdtype)
        w1 = torch.pow(torch.full((filled,), beta1, dtype=cdtype, device=p.device), ages)
        w2 = torch.pow(torch.full((filled,), beta2, dtype=cdtype, device=p.device), ages)
        first = torch.zeros(d, dtype=cdtype, device=p.device)
        first.index_add_(0, where, (window * w1[:, None]).view(-1))
        second = torch.zeros(d, dtype=cdtype, device=p.device)
        second.index_add_(0, where, (window * window).mul_(w2[:, None]).view(-1))
        c1 = (1 - beta1) / (1 - beta1**t)
        c2 = (1 - beta2) / (1 - beta2**t)
        sparse_update = first[where].mul_(c1).div_(second[where].mul_(c2).sqrt_().add_(eps))
        del first, second, window

        # 6. optional densification with the error (pre-training variant), 7. the update
        flat = p.view(-1) if p.is_contiguous() else None
        if alpha > 0 or flat is None:
            update = torch.zeros(d, dtype=cdtype, device=p.device).index_put_((where,), sparse_update)
            if alpha > 0:
                error = dequantize_4bit(codes, new_lo, new_hi, d, qbs)
                update.add_(error, alpha=alpha)
                codes, new_lo, new_hi = quantize_4bit(error.mul_(1 - alpha), qbs)
            p.add_(update.view(p.shape).to(p.dtype), alpha=-lr)
        else:  # a coordinate listed twice in the window gets the same value twice
            flat.index_put_((where,), (flat[where].to(cdtype) - lr * sparse_update).to(p.dtype))
        state["error_codes"].copy_(codes)
        lo.copy_(new_lo)
        hi.copy_(new_hi)

    _offset_cache: dict = {}

    @classmethod
    def _block_offsets(cls, full: int, block: int, k_many: int, k_few: int, device) -> torch.Tensor:
        """Start of the block of every column of the ring buffer (int64)."""
        key = (full, block, k_many, k_few, str(device))
        offsets = cls._offset_cache.get(key)
        if offsets is None:
            offsets = torch.arange(full, device=device).repeat_interleave(k_many) * block
            if k_few:
                offsets = torch.cat([offsets, torch.full((k_few,), full * block, device=device)])
            if len(cls._offset_cache) > 256:
                cls._offset_cache.clear()
            cls._offset_cache[key] = offsets
        return offsets
