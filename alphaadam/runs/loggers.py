"""Experiment loggers: ``none`` and ``wandb``. The run directory's files are the record; W&B is a view.

W&B runs are offline unless asked otherwise (``logger.mode``, else ``$WANDB_MODE``, else
``offline``), write under the run directory, and get a deterministic id derived from the
experiment and run directory name, so that a restarted run continues the same W&B run.
``finish()`` is always called by the recipe, whatever the outcome.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path


def wandb_run_id(experiment: str, run_dir: Path) -> str:
    return hashlib.sha256(f"{experiment}/{Path(run_dir).name}".encode()).hexdigest()[:16]


class NoLogger:
    def log(self, record: dict) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def finish(self, status: str = "completed") -> None:
        pass


class WandbLogger:
    def __init__(self, cfg, run_dir: Path, name: str, config: dict, run_id: str):
        import wandb

        mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            name=name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            config=config,
            tags=list(cfg.tags),
            settings=wandb.Settings(quiet=True, console="off"),
        )

    def log(self, record: dict) -> None:
        values = {}
        for key, value in record.items():
            if key == "mask_stats":
                for s in value:
                    values[f"alpha/{s['name']}"] = s["alpha"]
                    values[f"mask_density/{s['name']}"] = s["density"]
            elif isinstance(value, (int, float)) and key != "step":
                values[key] = value if math.isfinite(value) else float("nan")
        self.run.log(values, step=int(record["step"]))

    def summary(self, values: dict) -> None:
        self.run.summary.update(values)

    def finish(self, status: str = "completed") -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status in ("completed", "diverged", "oom") else 1)


def make_logger(cfg, run_dir: Path, name: str, config: dict, run_id: str):
    """The logger ``cfg.name`` asks for ("none" or "wandb")."""
    if cfg.name == "wandb":
        return WandbLogger(cfg, run_dir, name, config, run_id)
    return NoLogger()
