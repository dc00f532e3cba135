"""One process or many (``torchrun``): the device, the rank, and the few collectives a loop needs.

Under ``torchrun`` every process trains on its own device (``cuda:LOCAL_RANK``, or the CPU with the
gloo backend) and only rank 0 writes files and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from alphaadam.errors import UserError


class DeviceUnavailable(UserError, RuntimeError):
    """The config asks for a device this machine does not have."""


@dataclass(frozen=True)
class Distributed:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if preference == "cuda":
        raise DeviceUnavailable(
            "this run asks for a GPU (trainer.device=cuda) but torch sees none "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
            "Run it on a GPU node, or pass trainer.device=cpu to run it (slowly) on the CPU."
        )
    return torch.device("cpu")


def device_summary(device: torch.device) -> str:
    """What a run would use here, for preflight lines: "2 GPU(s)" or "CPU"."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    return f"{gpus} GPU(s)" if gpus else "CPU"


def setup(preference: str = "auto") -> Distributed:
    """Join the process group when started by ``torchrun`` with several processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(device, rank, local_rank, world_size)


def teardown(d: Distributed) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, d: Distributed) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(obj, d: Distributed):
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Distributed) -> None:
    if d.enabled:
        dist.barrier()
