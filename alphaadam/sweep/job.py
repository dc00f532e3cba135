"""A sweep job: one recipe run, as the command line that starts it."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from alphaadam.runs.lock import is_live
from alphaadam.runs.result import RESULT_FILE, ResultFileError, read_result


@dataclass(frozen=True)
class Job:
    """``script`` with Hydra ``overrides``; ``run_dir`` is where its result.json will be."""

    script: str
    overrides: tuple[str, ...]
    run_dir: Path
    gpus: int = 0
    gpu_hours: float | None = None  # estimate, for the plan
    tags: dict = field(default_factory=dict, compare=False)  # optimizer, lr, seed, task: for display

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def result_path(self) -> Path:
        return self.run_dir / RESULT_FILE

    def argv(self, processes: int = 1) -> list[str]:
        """The command; several processes run under ``torchrun --standalone`` (a free local port each)."""
        if processes > 1:
            launcher = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={processes}",
            ]
        else:
            launcher = [sys.executable]
        return [*launcher, self.script, *self.overrides]

    def status(self) -> str:
        """``pending`` without a result.json; ``unreadable`` when it cannot be parsed or breaks the
        schema; ``interrupted`` for a run that says "running" but whose process is gone (it resumes
        when launched again); else the status result.json records."""
        try:
            result = read_result(self.run_dir)
        except ResultFileError:
            return "unreadable"
        if result is None:
            return "pending"
        if result["status"] == "running" and not is_live(self.run_dir):
            return "interrupted"
        return result["status"]
