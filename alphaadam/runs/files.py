"""Atomic file writes: a reader (or a killed writer) never sees half a file."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from pathlib import Path

import torch

from alphaadam.errors import UserError


class UnreadableRunFile(UserError):
    """A run's own file (checkpoint, metrics log) that cannot be read back; the message names it
    and the choice: restore it, or delete it and start over."""


TMP_SUFFIX = ".tmp"


def _disk_full(directory: Path) -> bool:
    try:
        return shutil.disk_usage(directory).free < 1 << 20
    except OSError:
        return False


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are 0600; results on a shared cluster should follow the user's umask.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a full disk as "PytorchStreamWriter failed writing file": say what it is.
        if isinstance(err, RuntimeError) and _disk_full(path.parent):
            raise OSError(errno.ENOSPC, f"No space left on device writing {path}") from err
        raise


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporaries of writes that a killed process never finished (a checkpoint's can be
    gigabytes). Call only while holding the directory's run lock: then no write is in flight."""
    stale = list(Path(directory).glob(f".*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_torch(path: Path, obj) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def read_json(path: Path):
    """The parsed file, or None when it does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
