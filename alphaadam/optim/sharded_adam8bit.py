"""bitsandbytes' ``AdamW8bit`` that also takes FSDP2 (``fully_shard``) parameters.

bitsandbytes' kernels take plain tensors only. Here the param groups hold the parameters themselves
(DTensors under FSDP2, so that ``torch.distributed.checkpoint`` finds their state by name), and each
step hands bitsandbytes a plain parameter aliasing the rank's local shard and its local gradient.
The 8-bit blocks and the ``min_8bit_size`` rule therefore follow the shard; the state, shaped like
the shard, is saved as one row per rank (:func:`sharding.per_rank_state_as_dtensors`).
"""

from __future__ import annotations

import bitsandbytes as bnb
import torch

from alphaadam.optim import sharding
from alphaadam.optim.common import param_name


class ShardedAdamW8bit(bnb.optim.AdamW8bit):
    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        self._refuse_straddling_shards()

    def _refuse_straddling_shards(self) -> None:
        """bitsandbytes keeps a tensor under ``min_8bit_size`` in fp32: a DTensor whose shards lie on
        both sides of it would hold 8-bit state on some ranks and fp32 on others, which no checkpoint
        can save. Known from the shapes alone, so refused here rather than at the first save."""
        threshold = self.args.min_8bit_size
        for group, index, p in ((g, i, q) for g in self.param_groups for i, q in enumerate(g["params"])):
            if sharding.is_plain(p):
                continue
            smallest, largest = sharding.shard_numel_range(p)
            if smallest < threshold <= largest:
                raise ValueError(
                    f"Adam-8bit under FSDP2: the shards of {param_name(group, index)} hold "
                    f"{smallest} to {largest} elements, on both sides of min_8bit_size={threshold} "
                    "(8-bit state on some ranks, fp32 on others, which checkpoints cannot save); "
                    f"set min_8bit_size to at most {smallest} or above {largest}"
                )

    def init_state(self, group, p, gindex, pindex):
        self._on_shard(super().init_state, group, p, gindex, pindex)

    def update_step(self, group, p, gindex, pindex):
        self._on_shard(super().update_step, group, p, gindex, pindex)

    def _on_shard(self, method, group, p, gindex, pindex) -> None:
        """``method`` on the rank's shard of ``p``; the state stays keyed by ``p``."""
        if sharding.is_plain(p):
            return method(group, p, gindex, pindex)
        shard = torch.nn.Parameter(sharding.local(p), requires_grad=False)  # the same memory
        shard.grad = sharding.local(p.grad)
        self.state[shard] = self.state.pop(p, {})  # bitsandbytes keys the state by the tensor it is given
        try:
            method(group, shard, gindex, pindex)
        finally:
            self.state[p] = self.state.pop(shard)

    def state_dict(self) -> dict:
        return sharding.per_rank_state_as_dtensors(self, super().state_dict())

    def load_state_dict(self, state_dict: dict, move_to_device: bool = True) -> None:
        state_dict = sharding.per_rank_state_from_dtensors(self, state_dict, self._layout)
        super().load_state_dict(state_dict, move_to_device=move_to_device)

    def _layout(self, group: dict, p: torch.Tensor) -> dict:
        """The state this rank has, or would make, for ``p``."""
        if not self.state.get(p):
            index = next(i for i, q in enumerate(group["params"]) if q is p)
            gindex = next(i for i, g in enumerate(self.param_groups) if g is group)
            self.init_state(group, p, gindex, index)
        return self.state[p]
