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


class ShardedAdamW8bit(bnb.optim.AdamW8bit):
    state_follows_shards = True  # under FSDP2: saved per rank, resumed on as many ranks only

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
