"""What every masked optimizer shares: option checks, state precision, statistics, state_dict."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alphaadam.optim import kernels
from alphaadam.optim.common import KeepsStateDtypes, check_number
from alphaadam.optim.masking import validate_mask_options

LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class MaskStat:
    """Compensation factor and mask density of one parameter tensor after the last step."""

    group: int
    index: int
    name: str | None
    alpha: float
    density: float


def state_dtype(param: torch.Tensor) -> torch.dtype:
    """Optimizer state is fp32 for bf16/fp16 parameters (moments lose too much in 8 mantissa bits)."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


class MaskedOptimizer(KeepsStateDtypes, torch.optim.Optimizer):
    """Base class of the optimizers built on :mod:`alphaadam.optim.masking`.

    Subclasses list the keys of their per-step statistics in ``_stat_keys`` (stored per parameter in
    the state as 0-d device tensors, so recording them needs no host-device synchronisation).
    """

    def __init__(self, params, defaults: dict, backend: str | None):
        self.backend = kernels.resolve_backend(backend)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1])

    def _validate_group(self, group: dict) -> None:
        check_number("lr", group["lr"])
        check_number("weight_decay", group["weight_decay"])
        validate_mask_options(
            group["mask"],
            group["compensation"],
            group["empty_mask"],
            group["alpha_norm"],
            group["alpha_max"],
            group["mask_strict"],
        )
        for p in group["params"]:
            if not p.is_floating_point():
                raise ValueError(f"{type(self).__name__} needs floating-point parameters, got {p.dtype}")

    @staticmethod
    def _scalars(
        values: dict[str, float], dtype: torch.dtype, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Hyper-parameters as 0-d tensors: a compiled pass takes them for half the call overhead
        of Python floats, and one set serves every tensor of a group at a given step."""
        tensors = torch.tensor(list(values.values()), dtype=dtype).to(device, non_blocking=True).unbind()
        return dict(zip(values, tensors, strict=True))

    def mask_stats(self) -> list[MaskStat]:
        """Per-tensor alpha and mask density of the last step (Figures 4-5); syncs the device once."""
        records, values = [], []
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names")
            for pi, p in enumerate(group["params"]):
                state = self.state.get(p, {})
                if "alpha" in state:
                    records.append((gi, pi, names[pi] if names else None))
                    values.append(torch.stack([state["alpha"].float(), state["mask_density"].float()]))
        if not values:
            return []
        table = torch.stack([v.to(values[0].device) for v in values]).cpu().tolist()
        return [MaskStat(g, i, n, a, d) for (g, i, n), (a, d) in zip(records, table, strict=True)]
