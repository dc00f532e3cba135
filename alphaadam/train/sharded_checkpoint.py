"""Checkpoints of FSDP2 runs: every process writes its own shards with ``torch.distributed.checkpoint``.

The checkpoint is one directory, ``checkpoint.dcp/``, with one complete checkpoint per step
subdirectory (``step-<N>/``: DCP's ``.metadata`` and ``*.distcp`` shards of the model and the
optimizer, and ``session.pt``, the small replicated parts that rank 0 writes: step, tokens, scaler,
tracker, random states, data position, elapsed time, W&B id, the optimizer's parameter-group
settings and the number of processes) and ``LATEST``, the name of the one to resume from.

A save has two halves: :func:`stage` (every process writes its shards into a new subdirectory) and
:func:`commit` (rank 0 writes ``session.pt`` there, then replaces ``LATEST`` in one atomic rename,
then deletes the older subdirectories). A kill at any moment leaves ``LATEST`` naming a complete
checkpoint (or no ``LATEST``: no checkpoint yet). The halves are apart at the end of a run: the
shards are staged while every process is still there, and rank 0 commits after scoring the model
alone, so a run killed during that evaluation resumes from the checkpoint before and scores again.

A checkpoint resumes on the number of processes that wrote it; another number stops with a
one-line error naming both (DCP can reshard model and optimizer states, but resuming that way is
not tested here).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from alphaadam.errors import UserError
from alphaadam.runs.files import UnreadableRunFile, save_torch, write_text
from alphaadam.train.distributed import Distributed, barrier, broadcast
from alphaadam.train.state import load_checkpoint

SHARDED_DIR = "checkpoint.dcp"
REPLICATED_FILE = "session.pt"
LATEST_FILE = "LATEST"


def is_sharded(model: torch.nn.Module) -> bool:
    """The model's parameters are FSDP2 shards (DTensors): its state dict is no process's alone."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def latest(path: Path) -> Path | None:
    """The complete checkpoint that ``LATEST`` names, or None before the first commit."""
    pointer = Path(path) / LATEST_FILE
    return Path(path) / pointer.read_text().strip() if pointer.is_file() else None


def stage(path: Path, model, optimizer, step: int, dist: Distributed) -> Path:
    """Every process writes its shards into a new subdirectory of ``path`` (a collective); returns
    it. Nothing resumes from it before :func:`commit`."""
    path = Path(path)
    current = latest(path)
    name = f"step-{step}"
    if current is not None and current.name == name:  # never overwrite the checkpoint in force
        name += "-again"
    staged = path / name
    if dist.is_main:  # what a killed save left behind under this name
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
    barrier(dist)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=staged)
    return staged


def commit(staged: Path, optimizer, replicated: dict, world_size: int) -> None:
    """Rank 0 alone, after :func:`stage`: ``session.pt`` into the staged subdirectory, ``LATEST``
    pointed at it, the older subdirectories (and what killed saves left) deleted."""
    staged = Path(staged)
    extra = {"param_groups": _group_settings(optimizer), "world_size": world_size}
    save_torch(staged / REPLICATED_FILE, {**replicated, **extra})
    write_text(staged.parent / LATEST_FILE, staged.name)  # the switch: one atomic rename
    for other in staged.parent.iterdir():  # older checkpoints, and what killed saves left
        if other.is_dir() and other != staged:
            shutil.rmtree(other, ignore_errors=True)
        elif other.is_file() and other.name != LATEST_FILE:
            other.unlink(missing_ok=True)


def save(path: Path, model, optimizer, replicated: dict, dist: Distributed) -> None:
    """Stage and commit a checkpoint under ``path`` (a collective: every process calls it)."""
    staged = stage(path, model, optimizer, replicated["step"], dist)
    if dist.is_main:  # dcp.save returns once every shard and the metadata are written
        commit(staged, optimizer, replicated, dist.world_size)
    barrier(dist)


def load(path: Path, model, optimizer, dist: Distributed) -> dict | None:
    """Load the shards of the checkpoint ``LATEST`` names into ``model`` and ``optimizer`` (a
    collective); returns the replicated parts, or None without a checkpoint."""
    current = broadcast(latest(path), dist)
    if current is None:
        return None
    replicated = load_checkpoint(current / REPLICATED_FILE, dist.device)
    if replicated is None:
        raise UnreadableRunFile(
            f"checkpoint {current} has no {REPLICATED_FILE}: restore it, "
            f"or delete {path} to start the run over"
        )
    recorded = replicated.pop("world_size")
    if recorded != dist.world_size:
        raise UserError(other_process_count(path, recorded, dist.world_size))
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=current)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    for group, settings in zip(optimizer.param_groups, replicated.pop("param_groups"), strict=True):
        group.update(settings)
    return replicated


def refuse_other_layout(single: Path, sharded: bool, dist: Distributed) -> None:
    """Stop in one line, rather than start over beside it, when the run directory holds the other
    kind of checkpoint: ``single`` (``checkpoint.pt``, one process's) for a sharded run,
    ``checkpoint.dcp`` beside it (several processes') for an unsharded one."""
    single = Path(single)
    shards = single.parent / SHARDED_DIR
    if sharded and single.is_file():
        raise UserError(other_process_count(single, 1, dist.world_size))
    current = None if sharded else latest(shards)
    if current is not None:
        recorded = load_checkpoint(current / REPLICATED_FILE)["world_size"]
        raise UserError(other_process_count(shards, recorded, dist.world_size))


def other_process_count(path: Path, recorded: int, current: int) -> str:
    processes = f"{recorded} process{'es' * (recorded > 1)}"
    return (
        f"checkpoint {path} was written by {processes} and this run has {current}: "
        f"resume it with {processes}, or delete it to start over"
    )


def _group_settings(optimizer) -> list[dict]:
    """Each parameter group's settings but its parameters. dcp.load fills only the keys that the
    new optimizer already has, so a key added during the run (the schedule's ``initial_lr``) would
    be lost: they are kept, with the rest of the replicated state, in ``session.pt``."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
