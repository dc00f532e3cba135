"""The recipes' ``trainer.fused_backward_update`` setting: AdaLomo's update inside backward."""

from __future__ import annotations

import torch

from alphaadam.optim.fused_backward import FusedBackwardUpdate
from alphaadam.train.config import ConfigError


def fused_update_for_trainer(
    optimizer: torch.optim.Optimizer, trainer, accumulation_steps: int, distributed: bool, precision: str
) -> FusedBackwardUpdate | None:
    """Hooks on ``optimizer``'s parameters when ``trainer.fused_backward_update`` is on (clipping to
    ``trainer.grad_clip``), else None; a setting that cannot work with it stops the run, named."""
    if not trainer.fused_backward_update:
        return None
    problem = None
    if accumulation_steps > 1:
        problem = f"gradient accumulation ({accumulation_steps} micro-batches a step)"
    elif distributed:
        problem = "data-parallel training (the update would run before the all-reduce)"
    elif precision == "float16":
        problem = "float16 with loss scaling (use trainer.dtype=bfloat16 or float32)"
    if problem:
        raise ConfigError(f"trainer.fused_backward_update=true cannot work with {problem}")
    try:
        return FusedBackwardUpdate(optimizer, max_norm=trainer.grad_clip)
    except ValueError as err:
        raise ConfigError(f"trainer.fused_backward_update=true: {err}") from None
