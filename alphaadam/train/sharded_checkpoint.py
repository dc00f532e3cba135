"""Checkpoints of FSDP2 runs: every process writes its own shards with ``torch.distributed.checkpoint``.

The checkpoint is one directory, ``checkpoint.dcp/``: the shards of the model and the optimizer
(DCP's ``.metadata`` and ``*.distcp`` files) and ``session.pt``, the small replicated parts that
rank 0 writes (step, tokens, scaler, tracker, random states, data position, elapsed time, W&B id,
the optimizer's parameter-group settings, the number of processes).
It is written into a temporary directory and renamed into place after every shard is on disk, so a
kill during the write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from alphaadam.errors import UserError
from alphaadam.runs.files import TMP_SUFFIX, UnreadableRunFile, save_torch
from alphaadam.train.distributed import Distributed, barrier, broadcast
from alphaadam.train.state import load_checkpoint

SHARDED_DIR = "checkpoint.dcp"
REPLICATED_FILE = "session.pt"


def is_sharded(model: torch.nn.Module) -> bool:
    """The model's parameters are FSDP2 shards (DTensors): its state dict is no process's alone."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def save(path: Path, model, optimizer, replicated: dict, dist: Distributed) -> None:
    """Write the checkpoint directory ``path`` (a collective: every process calls it)."""
    path = Path(path)
    tmp, old = (path.parent / f".{path.name}{suffix}{TMP_SUFFIX}" for suffix in ("", ".old"))
    if dist.is_main:  # what a killed save left behind
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(dist)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
    if dist.is_main:  # dcp.save returns on rank 0 once every shard and the metadata are written
        replicated = {**replicated, "param_groups": _group_settings(optimizer), "processes": dist.world_size}
        save_torch(tmp / REPLICATED_FILE, replicated)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    barrier(dist)


def load(path: Path, model, optimizer, dist: Distributed) -> dict | None:
    """Load the shards of ``path`` into ``model`` and ``optimizer`` (a collective); returns the
    replicated parts, or None without a checkpoint."""
    path = Path(path)
    if not broadcast(path.is_dir(), dist):
        return None
    replicated = load_checkpoint(path / REPLICATED_FILE, dist.device)
    if replicated is None:
        raise UnreadableRunFile(
            f"checkpoint {path} has no {REPLICATED_FILE}: restore it, or delete it to start the run over"
        )
    processes = replicated.pop("processes", dist.world_size)
    if processes != dist.world_size and getattr(optimizer, "state_follows_shards", False):
        raise UserError(
            f"checkpoint {path} was written by {processes} processes and this run has {dist.world_size}: "
            f"{type(optimizer).__name__}'s state follows each process's shard, so resume it with "
            f"{processes} processes, or delete it to start the run over"
        )
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    for group, settings in zip(optimizer.param_groups, replicated.pop("param_groups"), strict=True):
        group.update(settings)
    return replicated


def _group_settings(optimizer) -> list[dict]:
    """Each parameter group's settings but its parameters. dcp.load fills only the keys that the
    new optimizer already has, so a key added during the run (the schedule's ``initial_lr``) would
    be lost: they are kept, with the rest of the replicated state, in ``session.pt``."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
