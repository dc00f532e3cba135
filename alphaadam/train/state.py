"""Seeding, random-number-generator state, and checkpoint files."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from alphaadam.runs.files import UnreadableRunFile, save_torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device | None = None) -> dict:
    """The generators' states; on a GPU, only ``device``'s (not every visible GPU's)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a kill during the write leaves the previous checkpoint intact."""
    save_torch(path, state)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict | None:
    """The checkpoint, or None without one; an unreadable one is an error, never a silent restart."""
    if not Path(path).is_file():
        return None
    try:
        # Our own file: it holds optimizer states that may contain plain Python objects.
        checkpoint = torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as err:
        raise UnreadableRunFile(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0]}): "
            "restore it, or delete it to start the run over"
        ) from None
    if not isinstance(checkpoint, dict) or "step" not in checkpoint:
        raise UnreadableRunFile(
            f"checkpoint {path} is not a checkpoint of this harness: restore it, or delete it to "
            "start the run over"
        )
    return checkpoint
