"""Run jobs inside the sweep's own process: no interpreter start-up or import cost per job.

For CPU studies of many short runs (``make demo``). Each job is composed exactly as its recipe
composes it and handed to the recipe's ``train(cfg)``; its output goes to ``<run_dir>/launcher.log``.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hydra import compose, initialize_config_dir

from alphaadam.paths import hydra_search
from alphaadam.recipe import load_recipe
from alphaadam.sweep.job import Job
from alphaadam.sweep.local import LOG_FILE, final_status, taken_elsewhere
from alphaadam.sweep.progress import SweepProgress


def run_inline(
    jobs: Sequence[Job], config_dir: Path, recipe: str, progress: SweepProgress | None = None
) -> dict[str, str]:
    progress = progress or SweepProgress(len(jobs))
    statuses = {}
    if not jobs:
        return statuses
    train = load_recipe(recipe, Path(jobs[0].script).parent).declared("train")  # none: stops here, named
    main, search = hydra_search(recipe, config_dir)
    with initialize_config_dir(config_dir=str(main), version_base=None):
        for job in jobs:
            if taken_elsewhere(job):
                statuses[job.name] = "running"
                progress.skipped(job.name)
                continue
            progress.started(job.name)
            cfg = compose(config_name=recipe, overrides=[*job.overrides, *search])
            job.run_dir.mkdir(parents=True, exist_ok=True)
            code = 0
            with open(job.run_dir / LOG_FILE, "a") as log, redirect_stdout(log), redirect_stderr(log):
                try:
                    train(cfg)
                except Exception:  # the recipe has recorded the failure; the sweep goes on
                    traceback.print_exc()
                    code = 1
            statuses[job.name] = final_status(job, code)
            progress.finished(job.name, statuses[job.name])
    progress.close()
    return statuses
