"""CPU processes on gloo for the FSDP2 tests, spawned from pytest on a free loopback port.

A worker ``worker(rank, port, out_dir)`` joins with :func:`init` and ends with :func:`finish`, which
writes its findings to ``rank{r}.json``; :func:`spawn` returns them once every rank has exited
(``mp.spawn`` raises if one failed). One spawn should run all of a file's checks: a process start
costs seconds on a busy machine.
"""

import datetime
import json
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def init(rank: int, port: int, world: int):
    """Join the gloo group; returns the one-dimensional CPU device mesh over all ranks."""
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),  # a rank that fails cannot leave the other waiting long
    )
    torch.set_num_threads(1)
    return init_device_mesh("cpu", (world,))


def finish(rank: int, out_dir: str, report: dict) -> None:
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


def spawn(worker, out: Path, world: int) -> list[dict]:
    with socket.socket() as s:  # a free loopback port from the OS
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, str(out)), nprocs=world, join=True)  # raises if a rank fails
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def dcp_round_trip(model, optimizer, path: str, make):
    """Save ``model`` and ``optimizer`` through torch.distributed.checkpoint and load them into the
    fresh ``(model, optimizer)`` pair that ``make()`` builds, which is returned."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import state_dict as dcp_state

    def both(m, o):
        return {"model": dcp_state.get_model_state_dict(m), "optim": dcp_state.get_optimizer_state_dict(m, o)}

    dcp.save(both(model, optimizer), checkpoint_id=path)
    fresh, fresh_optimizer = make()
    state = both(fresh, fresh_optimizer)
    dcp.load(state, checkpoint_id=path)
    dcp_state.set_model_state_dict(fresh, state["model"])
    dcp_state.set_optimizer_state_dict(fresh, fresh_optimizer, state["optim"])
    return fresh, fresh_optimizer
