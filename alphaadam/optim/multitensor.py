"""The masked optimizers' step over a whole list of tensors with torch's ``_foreach_*`` ops.

This is the path of every tensor the C kernels do not take (CUDA, bf16/fp16, non-contiguous
tensors, FSDP2 shards). Each function takes the lists of one bucket (tensors that share a param
group, dtype and device) and dispatches a fixed number of ATen ops whatever the list's length:

* the mask is sign arithmetic, ``clamp(sign(m * g), min=0)`` for ``>`` or
  ``clamp(sign(m * g) + 1, max=1)`` for ``>=``, kept as a 0/1 list;
* the per-tensor sums are ``torch._foreach_norm``\\ s stacked into one ``(n, 4)`` float64 table
  (``sum |u|^p``, ``sum |M u|^p``, ``sum M``, numel), which is what sharded tensors all-reduce;
* per-tensor factors (alpha, the empty-mask choice) are vectors on the device, applied through
  ``unbind()`` views, so nothing in the step waits for the device.
"""

from __future__ import annotations

import math

import torch


def sign_mask(reference: list, grads: list, strict: bool) -> list:
    """``1[reference * grad > 0]`` (``>= 0`` when not strict) as 0/1 tensors of ``reference``'s dtype."""
    keep = torch._foreach_mul(reference, grads)
    torch._foreach_sign_(keep)
    if strict:
        torch._foreach_clamp_min_(keep, 0.0)
    else:
        torch._foreach_add_(keep, 1.0)
        torch._foreach_clamp_max_(keep, 1.0)
    return keep


def norm_powers(tensors: list, norm: str) -> torch.Tensor:
    """``sum |x|^p`` per tensor as a float64 vector (``max |x|`` for ``p = inf``); ``norm`` is
    :func:`alphaadam.optim.masking.static_float` of ``p``. Low-precision tensors sum in fp32."""
    p = float(norm)
    dtype = None if tensors[0].dtype in (torch.float32, torch.float64) else torch.float32
    norms = torch.stack(torch._foreach_norm(tensors, p, dtype=dtype)).double()
    return norms if math.isinf(p) else norms.pow(p)


def masked_statistics(unmasked: list, keep: list | None, norm: str, need_norms: bool):
    """``(directions, table)``: the masked directions ``M * u`` and the ``(n, 4)`` statistics table.

    ``unmasked`` (``u``) must not be written to afterwards while ``directions`` is in use: with no
    mask the directions *are* ``u``. ``keep`` is reused as the buffer of the masked directions.
    """
    device = unmasked[0].device
    numel = torch.tensor([u.numel() for u in unmasked], dtype=torch.float64).to(device, non_blocking=True)
    full = norm_powers(unmasked, norm) if need_norms else torch.zeros_like(numel)
    if keep is None:
        return unmasked, torch.stack([full, full, numel, numel], dim=1)
    kept = torch.stack(torch._foreach_norm(keep, 1, dtype=torch.float64))
    torch._foreach_mul_(keep, unmasked)
    masked = norm_powers(keep, norm) if need_norms else torch.zeros_like(numel)
    return keep, torch.stack([full, masked, kept, numel], dim=1)


def take_unmasked_where_empty(directions: list, unmasked: list, empty: torch.Tensor) -> None:
    """The empty-mask rule's step: ``directions[i] = unmasked[i]`` where ``empty[i]``, without a
    branch on the device's values. An empty mask leaves zero directions, so adding ``empty[i] * u``
    is exact."""
    torch._foreach_add_(directions, torch._foreach_mul(unmasked, empty.to(directions[0].dtype).unbind()))


def apply_updates(params: list, directions: list, step: torch.Tensor, decay: torch.Tensor | None) -> None:
    """``param <- param * decay - step[i] * direction`` per tensor (``step``: a vector on the device,
    ``decay``: a 0-d tensor, None for 1).

    ``directions`` is used as scratch. Low-precision parameters are updated in the directions'
    (fp32) precision and rounded once.
    """
    torch._foreach_mul_(directions, (-step).to(directions[0].dtype).unbind())
    wide = in_dtype_of(params, directions)
    if decay is not None:
        torch._foreach_mul_(wide, decay)
    torch._foreach_add_(wide, directions)
    if wide is not params:
        torch._foreach_copy_(params, wide)


def masked_update(params, directions, unmasked, step, take_unmasked, decay, *, empty_full: bool):
    """Second pass over a bucket: the empty-mask rule's unmasked steps, then
    ``param <- param * decay - step * direction`` (``step``: lr times alpha, per tensor)."""
    if empty_full:
        take_unmasked_where_empty(directions, unmasked, take_unmasked)
    apply_updates(params, directions, step, decay)


def in_dtype_of(tensors: list, like: list) -> list:
    """``tensors`` converted to the dtype of ``like`` (a fresh list; the same list if it already is)."""
    if tensors[0].dtype == like[0].dtype:
        return tensors
    out = torch._foreach_mul(like, 0.0)
    torch._foreach_copy_(out, tensors)
    return out
