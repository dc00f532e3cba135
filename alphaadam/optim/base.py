"""What every masked optimizer shares: option checks, state precision, statistics, state_dict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from alphaadam.optim import kernels, multitensor, sharding
from alphaadam.optim.common import KeepsStateDtypes, check_number, evaluate_closure, params_with_grad
from alphaadam.optim.masking import effective_compensation, static_float, step_factors, validate_mask_options

LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class MaskStat:
    """Compensation factor and mask density of one parameter tensor after the last step."""

    group: int
    index: int
    name: str | None
    alpha: float
    density: float


@dataclass
class Bucket:
    """Tensors of one step that share a param group, dtype, device, shard group and step kind.

    ``params`` are the parameters themselves (DTensors under FSDP2); the passes work on their local
    shards. ``kind`` is the subclass's bucket key (e.g. the step number); ``scratch`` holds what
    the first pass leaves for the second.
    """

    group: dict
    kind: tuple
    native: bool
    shard_group: object
    params: list = field(default_factory=list)
    states: list = field(default_factory=list)
    scratch: dict = field(default_factory=dict)

    def locals(self, key: str | None = None) -> list[torch.Tensor]:
        """Local shards of the parameters (``key=None``), their gradients (``"grad"``) or a state."""
        if key is None:
            return [sharding.local(p) for p in self.params]
        if key == "grad":
            return [sharding.local(p.grad) for p in self.params]
        return [sharding.local(s[key]) for s in self.states]


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

    # Subclasses implement the bucket key and the two passes.
    def _init_state(self, p: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    def _bucket_kinds(self, entries: list[tuple[dict, torch.Tensor, dict]]) -> list[tuple]:
        """One hashable per (group, parameter, state): what else must be equal within a bucket."""
        raise NotImplementedError

    def _takes_native(self, group: dict, p: torch.Tensor, state: dict) -> bool:
        return False

    def _first_pass(self, bucket: Bucket) -> torch.Tensor:
        """Update the state; return the bucket's (n, 4) float64 statistics table (local sums)."""
        raise NotImplementedError

    def _second_pass(self, bucket: Bucket, alpha: torch.Tensor, take_unmasked: torch.Tensor) -> None:
        raise NotImplementedError

    def _rule(self, bucket: Bucket) -> tuple[str, str]:
        """(mask, compensation) of the bucket's step."""
        group = bucket.group
        return group["mask"], effective_compensation(group["mask"], group["compensation"])

    def _multitensor_first_pass(self, bucket: Bucket, fn, *args, **options) -> torch.Tensor:
        """Run a multi-tensor direction pass ``fn(*args, **options, mask=, strict=, norm=,
        need_norms=)``; keep its directions for the second pass and return its statistics table."""
        group = bucket.group
        mask, compensation = self._rule(bucket)
        directions, unmasked, table = kernels.run(
            fn,
            self.backend,
            *args,
            **options,
            mask=mask,
            strict=group["mask_strict"],
            norm=static_float(group["alpha_norm"]),
            need_norms=compensation == "norm_ratio",
        )
        bucket.scratch.update(directions=directions, unmasked=unmasked)
        return table

    def _multitensor_second_pass(self, bucket: Bucket, step: torch.Tensor, take_unmasked, decay) -> None:
        """The shared second pass: ``step`` is lr times alpha per tensor, ``decay`` a 0-d tensor or None."""
        kernels.run(
            multitensor.masked_update,
            self.backend,
            bucket.locals(),
            bucket.scratch["directions"],
            bucket.scratch["unmasked"],
            step,
            take_unmasked,
            decay,
            empty_full=self._rule(bucket)[0] != "none" and bucket.group["empty_mask"] == "full",
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        buckets = self._buckets()
        tables = [self._first_pass(b) for b in buckets]
        # One all-reduce per step for all FSDP2-sharded tensors: alpha and the empty-mask decision
        # come from whole-tensor sums, identical on every rank.
        tables = sharding.all_reduce_tables(tables, [b.shard_group for b in buckets])
        for bucket, table in zip(buckets, tables, strict=True):
            group = bucket.group
            mask, compensation = self._rule(bucket)
            alpha, take_unmasked, density = step_factors(
                table,
                compensation,
                static_float(group["alpha_norm"]),
                static_float(group["alpha_max"]),
                mask != "none" and group["empty_mask"] == "full",
            )
            self._second_pass(bucket, alpha, take_unmasked)
            if mask == "none" and group["mask"] != "none":  # a first step known to have an empty mask
                density = torch.zeros_like(density)
            stats = zip(alpha.float().unbind(), density.float().unbind(), strict=True)
            for state, (a, d) in zip(bucket.states, stats, strict=True):
                state["alpha"], state["mask_density"] = a, d
        return loss

    def _buckets(self) -> list[Bucket]:
        entries, shard_groups = [], []
        owner = type(self).__name__
        for group, _, p in params_with_grad(self):
            shard_group = sharding.shard_group(p, owner)
            if shard_group is not None and math.isinf(group["alpha_norm"]):
                raise ValueError(
                    f"{owner}: alpha_norm=inf needs a maximum over FSDP2 shards; use a finite alpha_norm"
                )
            state = self.state[p]
            if not state:
                self._init_state(p, state)
            entries.append((group, p, state))
            shard_groups.append(shard_group)
        buckets: dict[tuple, Bucket] = {}
        kinds = self._bucket_kinds(entries)
        for (group, p, state), kind, shard_group in zip(entries, kinds, shard_groups, strict=True):
            native = shard_group is None and self._takes_native(group, p, state)
            key = (id(group), kind, p.dtype, p.device, native, id(shard_group))
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = Bucket(group, kind, native, shard_group)
            bucket.params.append(p)
            bucket.states.append(state)
        return list(buckets.values())

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
