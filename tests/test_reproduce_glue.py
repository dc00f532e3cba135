"""`make reproduce-glue`: the checks before the study, the plan, and what stops it on this machine."""

import os
import subprocess
import sys

import torch

from tests.pretrain_helpers import REPO


def preflight(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "alphaadam.preflight",
            "--sweep",
            "experiment=paper/glue_roberta",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_make_target_checks_then_sweeps_then_reports(tmp_path):
    stamp = tmp_path / "stamp"
    stamp.touch()

    def commands(*args):
        run = subprocess.run(
            ["make", "-n", "--no-print-directory", "reproduce-glue", f"STAMP={stamp}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        return [line.rstrip() for line in run.stdout.splitlines()]

    lines = commands()
    assert lines[0].endswith("-m alphaadam.preflight --sweep experiment=paper/glue_roberta")
    assert lines[1].endswith("alphaadam sweep experiment=paper/glue_roberta")
    assert "tables figures" in lines[2]
    lines = commands("DRY_RUN=1", "SWEEP=sweep.seeds=[0]")
    assert lines[0].endswith("--sweep experiment=paper/glue_roberta sweep.seeds=[0] --dry-run")
    assert lines[1].endswith("sweep experiment=paper/glue_roberta sweep.seeds=[0] --dry-run")
    assert "nothing ran" in lines[2] and not any("tables figures" in line for line in lines)


def test_dry_run_checks_every_configuration_and_names_what_is_skipped():
    run = preflight(
        "sweep.optimizers=[adamw,lion,alphaadam]", "sweep.tasks=[glue/rte,glue/stsb]", "--dry-run"
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "skipped: lion (not in the optimizer registry)"
    assert "config ok: roberta_base / rte / adamw" in lines
    assert "paper/glue_roberta: 4 configuration(s) of 2 task(s) checked" in lines


def test_a_bad_setting_stops_the_study_before_it_starts():
    run = preflight("sweep.tasks=[glue/rte]", "data.max_length=2", "--dry-run")
    assert run.returncode == 2 and "data.max_length" in run.stderr and "Traceback" not in run.stderr


def test_no_gpu_stops_the_study_before_any_job():
    if torch.cuda.is_available():
        return  # on a GPU node the study may start; nothing to check here
    run = preflight("sweep.tasks=[glue/rte]")
    assert run.returncode == 2 and "GPU" in run.stderr and "Traceback" not in run.stderr
