"""Where a run lives: a directory named from its configuration, never from a timestamp.

The name is ``<label>-<hash>``: ``label`` is a readable summary chosen by the recipe config
(``run.label``, e.g. ``gpt2_125m-alphaadam-lr6e-4-s0``) and ``hash`` the first 10 hex digits of
the SHA-256 of the *identity* config: the resolved config without the keys in ``run.exclude``
(logging, paths, progress bars: settings that do not change the result). Running the same config
twice therefore lands in the same directory, which is how a completed run is skipped and a killed
one resumed; a sweep planner finds a job's directory without launching it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"


def identity_config(cfg: DictConfig) -> dict:
    """The resolved config minus ``run.exclude`` keys (dotted paths) and the ``run`` block itself."""
    container = OmegaConf.to_container(cfg, resolve=True)
    exclude = list(container.get("run", {}).get("exclude", []))
    container.pop("run", None)
    for dotted in exclude:
        node, *path = dotted.split(".")
        parent, key = container, node
        for part in path:
            parent = parent.get(key) if isinstance(parent, dict) else None
            key = part
        if isinstance(parent, dict):
            parent.pop(key, None)
    return container


def _hash(container: dict) -> str:
    canonical = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def config_hash(cfg: DictConfig) -> str:
    return _hash(identity_config(cfg))


def variant_hash(cfg: DictConfig) -> str:
    """What tells a table's configurations apart: the hash of the identity config without the seed
    and the learning rate (identity fields of their own, the first averaged over, the second swept).
    Two runs with the same variant, learning rate and other identity fields are seeds of one
    configuration; any other difference (``optimizer.compensation``, ``scheduler.warmup_fraction``,
    ...) makes another variant."""
    container = identity_config(cfg)
    container.pop("seed", None)
    if isinstance(container.get("optimizer"), dict):
        container["optimizer"].pop("lr", None)
    return _hash(container)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text)).strip("_") or "run"


def run_dir_for(cfg: DictConfig) -> Path:
    """``<run.root>/<experiment>/<label>-<hash>``; ``run.dir`` overrides it when set."""
    run = cfg.run
    if run.get("dir"):
        return Path(run.dir)
    return Path(run.root) / slug(cfg.get("experiment", "default")) / f"{slug(run.label)}-{config_hash(cfg)}"
