"""`alphaadam sweep` and `alphaadam status` end to end on a toy recipe."""

import os

import pytest

from alphaadam.cli import main
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
