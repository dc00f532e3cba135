"""Optimizer updates fused into the backward pass: no full set of gradients is ever alive.

A post-accumulate-grad hook on every parameter fires once the parameter's gradient is final (after
all of its uses, tied weights included, are summed) and hands it to the optimizer's
``update_parameter(p, grad_scale, consume_grad=True)``, which updates the parameter (free to work in
``p.grad``'s memory) and the hook then frees ``p.grad``.
Updating a parameter during backward does not change the gradients still to come: the autograd
node that produced its gradient has already produced the gradients of its inputs.

Clipping by the global gradient norm needs that norm before the first update, so it takes two
backward passes over the same graph, as AdaLomo's authors do: the first only measures each
gradient's norm (and frees it), the second updates with the clipping coefficient
``min(1, max_norm / (norm + 1e-6))``.

This is for optimizers whose update of one parameter needs nothing of the others (AdaLomo). It
cannot accumulate gradients over micro-batches, and it updates before a data-parallel all-reduce
would run, so it refuses both; float16's loss scaling is refused too (bf16 and fp32 need none).
"""

from __future__ import annotations

import torch


class FusedBackwardUpdate:
    """Run ``optimizer``'s per-parameter update from hooks during ``backward(loss)``.

    Args:
        optimizer: has ``update_parameter(p, grad_scale, consume_grad)`` (:class:`alphaadam.optim.AdaLomo`).
        max_norm: clip the gradients to this global norm (two backward passes); 0 or None: no clipping.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_norm: float | None = 0.0):
        if not callable(getattr(optimizer, "update_parameter", None)):
            raise ValueError(
                f"{type(optimizer).__name__} cannot update inside backward: it has no "
                "update_parameter(p, grad_scale, consume_grad) (use optimizer=adalomo, or turn "
                "fused_backward_update off)"
            )
        if max_norm is not None and (not isinstance(max_norm, (int, float)) or max_norm < 0):
            raise ValueError(f"max_norm={max_norm!r} must be a number >= 0 (0: no clipping)")
        self.optimizer = optimizer
        self.max_norm = max_norm or 0.0
        self._measuring = False
        self._squares: list[torch.Tensor] = []
        self._scale = 1.0
        params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        self._handles = [p.register_post_accumulate_grad_hook(self._consume) for p in params]

    @torch.no_grad()
    def _consume(self, p: torch.Tensor) -> None:
        precision = torch.float64 if p.grad.dtype == torch.float64 else torch.float32
        norm = torch.linalg.vector_norm(p.grad, dtype=precision)  # a reduction: no copy of the gradient
        self._squares.append(norm.double().square())
        if not self._measuring:
            self.optimizer.update_parameter(p, self._scale, consume_grad=True)
        p.grad = None

    def backward(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward through ``loss`` with every parameter updated on the way; returns the gradients'
        global norm before clipping."""
        self._scale = 1.0
        if self.max_norm > 0:
            norm = self._pass(loss, measuring=True, retain_graph=True)
            self._scale = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
        norm = self._pass(loss, measuring=False, retain_graph=False)
        return norm

    def _pass(self, loss: torch.Tensor, measuring: bool, retain_graph: bool) -> torch.Tensor:
        self._measuring, self._squares = measuring, []
        try:
            loss.backward(retain_graph=retain_graph)
        finally:
            self._measuring = False
        if not self._squares:
            return torch.zeros((), device=loss.device)
        return torch.stack(self._squares).sum().sqrt()

    def remove(self) -> None:
        """Take the hooks off the parameters (the optimizer then works with ``step()`` again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
