"""Pieces every optimizer class here shares: argument checks, gradient iteration, state loading."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


def check_number(name: str, value, low: float = 0.0, high: float = math.inf, *, high_open=False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        bound = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name}={value!r} must be a number in {bound}")


class KeepsStateDtypes:
    """Mixin (before ``torch.optim.Optimizer``) whose ``load_state_dict`` keeps every state dtype.

    ``torch.optim.Optimizer.load_state_dict`` casts *every* tensor in the state to the parameter's
    floating dtype: fp32 moments of bf16 parameters would become bf16, and integer indices or 4-bit
    codes would become floats. Here each tensor comes back with the dtype it was saved with, on the
    parameter's device, as a copy (later steps never write into the caller's dictionary). Step
    counters stay where they were saved (on the CPU, as torch keeps them), so reading one never
    waits for a GPU.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for idx, p in zip(saved_ids, params, strict=True):
            for key, value in saved.get(idx, {}).items():
                if torch.is_tensor(value):
                    device = value.device if key == "step" else p.device
                    self.state[p][key] = value.to(device=device, copy=True)


def check_betas(betas) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas={betas!r} must be a pair")
    for i, beta in enumerate(betas):
        check_number(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)


def check_adam_group(group: dict) -> None:
    """lr, betas, eps and weight_decay of an Adam-type param group."""
    check_number("lr", group["lr"])
    check_betas(group["betas"])
    check_number("eps", group["eps"])
    check_number("weight_decay", group["weight_decay"])


def check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def evaluate_closure(closure):
    """torch.optim's ``step(closure)`` convention: re-evaluate the loss with gradients enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def params_with_grad(
    optimizer: torch.optim.Optimizer, groups: list[dict] | None = None
) -> Iterator[tuple[dict, int, torch.Tensor]]:
    """(group, index in group, parameter) for every parameter with a dense gradient, in ``groups``
    (default: the optimizer's param groups)."""
    for group in optimizer.param_groups if groups is None else groups:
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(optimizer).__name__} does not support sparse gradients; "
                    "build embeddings with sparse=False"
                )
            yield group, i, p


def param_name(group: dict, index: int) -> str:
    names = group.get("param_names")
    return repr(names[index]) if names else f"#{index} of its param group"
