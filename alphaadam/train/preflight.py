"""Checks that a run can start here, made before any long work (and before ``torchrun`` starts N
processes that would all fail the same way).

    python -m alphaadam.train.preflight pretrain_gpt experiment=paper/gpt2_pretrain model=gpt2_355m

composes the recipe's config with the given overrides and checks it (keys and types, optimizer
settings), the device it asks for, and its prepared data. It prints one line and exits 0 when the
run can start, or prints what is missing (with the command that fixes it) and exits 2.
"""

from __future__ import annotations

import sys

import torch
from omegaconf import DictConfig

from alphaadam.data.tokens import DataMissing, TokenData, is_prepared
from alphaadam.train.config import ConfigError, compose, validate
from alphaadam.train.distributed import DeviceUnavailable, resolve_device

STOPS = (ConfigError, DataMissing, DeviceUnavailable)


def check_data(cfg: DictConfig) -> None:
    """The data directory is prepared (the embedded corpus is built on first use, so it always is)."""
    data = cfg.get("data")
    if data is None or data.get("name") == "embedded" or is_prepared(data.dir):
        return
    TokenData.open(data.dir, prepare_hint=data.get("prepare", ""))  # raises DataMissing, with the hint


def preflight(cfg: DictConfig) -> str:
    """Validate ``cfg``, its device and its data; returns a one-line summary or raises a STOPS error."""
    typed = validate(cfg)
    device = resolve_device(typed.trainer.device)
    check_data(typed)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    where = f"{gpus} GPU(s)" if gpus else "CPU"
    return f"ready: {typed.model.name} / {typed.optimizer.name} on {where}, data in {typed.data.dir}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    config_name, overrides = argv[0], argv[1:]
    try:
        cfg = compose(config_name, overrides)
        print(preflight(cfg))
    except STOPS as err:
        print(f"{config_name}: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Hydra's errors for unknown options and bad overrides
        if type(err).__module__.startswith(("hydra", "omegaconf")):
            print(f"{config_name}: {str(err).strip()}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
