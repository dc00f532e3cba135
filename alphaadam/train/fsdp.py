"""FSDP2 for Hugging Face decoders: shard each decoder layer, then the root; weights loaded once on
rank 0 and broadcast; the full state dict gathered back on rank 0 for ``save_pretrained``.

Mixed precision: bf16 compute with fp32 master weights (and fp32 gradient reduction) by default;
``pure_bf16`` keeps the weights themselves in bf16 (the anchors' setting), so there is no cast.
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def shard(build, full_state: dict | None, dist, compute: torch.dtype | None) -> torch.nn.Module:
    """``build()`` on the meta device, sharded over every process, filled with ``full_state`` (rank 0's;
    the others pass None) by one broadcast. ``compute``: the dtype of forward and backward (None: the
    weights' own)."""
    with torch.device("meta"):
        model = build()
    mesh = init_device_mesh(dist.device.type, (dist.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32 if compute else None)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    model.to_empty(device=dist.device)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full_state if dist.is_main else {}, options=options)
    # The rotary frequencies are a buffer outside the state dict: made again on the device.
    rotary = model.model.rotary_emb
    with torch.device(dist.device):
        model.model.rotary_emb = type(rotary)(config=model.config)
    return model


def full_state(model: torch.nn.Module) -> dict:
    """Every weight as a plain CPU tensor on rank 0 (``{}`` on the others)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
