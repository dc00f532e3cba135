"""`alphaadam sweep` and `alphaadam status` end to end on a toy recipe."""

import json
import os

import pytest

from alphaadam.cli import main
from alphaadam.runs.lock import RunLock
from tests.sweep_tree import make_tree


@pytest.fixture
def tree(tmp_path, monkeypatch):
    tree = make_tree(tmp_path)
    monkeypatch.chdir(tree)
    return tree


# The toy tree's own folders (the defaults are the repository's configs/ and recipes/).
DIRS = ["--config-dir", "configs", "--recipes-dir", "recipes"]


def sweep(*tokens):
    return main(["sweep", *DIRS, "experiment=study", *tokens])


def test_dry_run_prints_the_plan_and_runs_nothing(tree, capsys):
    assert sweep("--dry-run") == 0
    out = capsys.readouterr().out
    assert "study study (toy): 20 jobs (20 pending), ~10 GPU-hours in all; 20 to run" in out
    assert out.count("pending  alphaadam  mrpc") == 6
    assert not (tree / "runs").exists()


def test_inline_sweep_runs_skips_and_reruns_failures(tree, capsys):
    code = sweep("sweep.tasks=null", "sweep.seeds=[0]", "sweep.gpus_per_job=0", "launcher=inline")
    out, err = capsys.readouterr()
    assert code == 1  # alphaadam at lr 3e-3 fails by design of the toy recipe
    assert "1 failed" in out and "[sweep] 5/5 done, 1 failed" in err
    run_dirs = sorted(p.name for p in (tree / "runs" / "study").iterdir())
    assert len(run_dirs) == 5
    failed = next(p for p in (tree / "runs" / "study").iterdir() if p.name.startswith("alphaadam-lr0.003"))
    assert "RuntimeError: lr too large" in (failed / "launcher.log").read_text()

    assert sweep("sweep.tasks=null", "sweep.seeds=[0]", "sweep.gpus_per_job=0", "launcher=inline") == 0
    assert "; 0 to run" in capsys.readouterr().out
    assert (
        sweep("sweep.tasks=null", "sweep.seeds=[0]", "sweep.gpus_per_job=0", "--only-failed", "--dry-run")
        == 0
    )
    assert "; 1 to run" in capsys.readouterr().out

    assert main(["status", *DIRS, "experiment=study", "sweep.tasks=null", "sweep.seeds=[0]"]) == 0
    assert "study study: 4 completed, 1 failed" in capsys.readouterr().out


def test_local_launcher_runs_each_job_in_its_own_process(tree, capsys):
    code = sweep("sweep.tasks=null", "sweep.seeds=[0]", "sweep.gpus_per_job=0", "sweep.optimizers=[adamw]")
    assert code == 0
    assert "[sweep] 2/2 done, 0 failed" in capsys.readouterr().err
    assert not (tree / "outputs").exists()


def test_gpu_study_on_a_cpu_machine_stops_before_any_job(tree, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert sweep() == 2
    assert "needs 1 GPU(s) per job but this machine shows none" in capsys.readouterr().err
    assert not (tree / "runs").exists()


def test_bad_requests_are_one_line_errors(tree, capsys):
    assert main(["sweep"]) == 2
    assert "experiment=<name>" in capsys.readouterr().err
    assert sweep("launcher=cloud") == 2
    assert "launcher='cloud' is not one of" in capsys.readouterr().err
    assert sweep("launcher=gpu_pool", "launcher.gpus=2") == 2
    assert "launcher gpu_pool has no option gpus" in capsys.readouterr().err
    os.chdir(tree / "recipes")
    assert sweep() == 2
    assert "no config directory configs: pass --config-dir" in capsys.readouterr().err


def small(*tokens):
    return sweep("sweep.tasks=null", "sweep.seeds=[0]", "sweep.gpus_per_job=0", *tokens)


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"status": "exploded"}'])
def test_status_and_dry_run_survive_a_bad_result_file(tree, capsys, content):
    assert small("launcher=inline") == 1
    capsys.readouterr()
    bad = next((tree / "runs" / "study").iterdir()) / "result.json"
    bad.write_text(content)
    assert main(["status", *DIRS, "experiment=study", "sweep.tasks=null", "sweep.seeds=[0]"]) == 0
    out = capsys.readouterr().out
    assert "study study: 3 completed, 1 failed, 1 unreadable" in out
    assert f"unreadable: {bad}" in out
    assert small("--dry-run") == 0
    out = capsys.readouterr().out
    assert "1 unreadable" in out and f"unreadable: {bad} (restore it, or delete" in out


def test_a_job_that_never_started_is_recorded_failed_and_rerun_by_only_failed(tree, capsys):
    crash = ("sweep.optimizers=[adamw]", "+crash_at_start=true")
    assert small(*crash) == 1
    capsys.readouterr()
    assert main(["status", *DIRS, "experiment=study", "sweep.tasks=null", "sweep.seeds=[0]", *crash]) == 0
    assert "study study: 2 failed" in capsys.readouterr().out
    result = json.loads(next((tree / "runs" / "study").iterdir()).joinpath("result.json").read_text())
    assert result["status"] == "failed"
    assert result["error"] == "did not start: RuntimeError: could not start"
    assert small(*crash, "--only-failed", "--dry-run") == 0
    assert "; 2 to run" in capsys.readouterr().out


def test_a_run_taken_by_another_sweep_is_left_to_it(tree, capsys):
    jobs_dir = tree / "runs" / "study"
    assert small("sweep.optimizers=[adamw]", "--dry-run") == 0
    capsys.readouterr()
    from alphaadam.sweep.cli import plan_study

    class Args:
        tokens = ["experiment=study", "sweep.tasks=null", "sweep.seeds=[0]", "sweep.optimizers=[adamw]"]
        config_dir, recipes_dir = "configs", "recipes"  # the toy tree's

    _, _, jobs = plan_study(Args)
    with RunLock(jobs[0].run_dir):  # a second sweep is training this one
        assert small("sweep.optimizers=[adamw]") == 0
    err = capsys.readouterr().err
    assert "1 failed" not in err and "1 run by another process" in err
    assert sorted(p.name for p in jobs_dir.iterdir() if (p / "result.json").exists()) == [jobs[1].name]


def test_status_into_a_closed_pipe_is_quiet(tree):
    import subprocess
    import sys

    cmd = f"{sys.executable} -m alphaadam.cli status {' '.join(DIRS)} experiment=study | head -1"
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=tree, timeout=120)
    assert out.stdout.startswith("study study: ")
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


def test_ctrl_c_of_a_sweep_says_how_to_resume(tree, capsys, monkeypatch):
    import alphaadam.sweep.cli as sweep_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_cli, "launch", interrupted)
    assert small() == 130
    err = capsys.readouterr().err
    assert "alphaadam sweep: interrupted; run the same command again to resume" in err
    assert "Traceback" not in err


def test_an_invalid_job_stops_the_sweep_before_any_job_starts(tree, capsys):
    assert small("sweep.lr={default: [1.0e-4, -1.0e-3]}", "sweep.optimizers=[adamw]") == 2
    err = capsys.readouterr().err
    assert "optimizer.lr=-0.001 must be greater than 0" in err and "optimizer.lr=-0.001" in err
    assert len(err.strip().splitlines()) == 1 and not (tree / "runs").exists()
