"""Launchers: local, the single-node GPU pool (file-lock leases), SLURM array scripts."""

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from alphaadam.sweep.job import Job
from alphaadam.sweep.local import run_local
from alphaadam.sweep.pool import run_pool
from alphaadam.sweep.slurm import write_array_scripts

FAKE_RECIPE = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    run_dir = Path(args["run.dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    with open(Path(args["log"]), "a") as log:
        log.write(json.dumps({"job": run_dir.name, "event": "start", "t": time.time(), "rank": rank,
                              "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
    time.sleep(float(args.get("sleep", 0.5)))
    with open(Path(args["log"]), "a") as log:
        log.write(json.dumps({"job": run_dir.name, "event": "end", "t": time.time(), "rank": rank}) + "\\n")
    if args.get("crash"):
        sys.exit(3)
    if rank == "0":
        (run_dir / "result.json").write_text(json.dumps({"status": "completed"}))
    """
)


@pytest.fixture
def recipe(tmp_path):
    script = tmp_path / "fake_recipe.py"
    script.write_text(FAKE_RECIPE)
    return script


def make_job(recipe, tmp_path, name, gpus=1, **args):
    run_dir = tmp_path / "runs" / name
    overrides = [
        f"run.dir={run_dir}",
        f"log={tmp_path / 'events.jsonl'}",
        *(f"{k}={v}" for k, v in args.items()),
    ]
    return Job(str(recipe), tuple(overrides), run_dir, gpus=gpus)


def events(tmp_path):
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


def max_concurrency(evts):
    timeline = sorted((e["t"], 1 if e["event"] == "start" else -1) for e in evts if e["rank"] == "0")
    level = peak = 0
    for _, delta in timeline:
        level += delta
        peak = max(peak, level)
    return peak


def test_pool_runs_at_most_one_job_per_device(recipe, tmp_path):
    jobs = [make_job(recipe, tmp_path, f"job{i}", sleep=1.0) for i in range(4)]
    statuses = run_pool(jobs, devices=["0", "1"], lock_dir=tmp_path / "locks")
    assert statuses == {f"job{i}": "completed" for i in range(4)}
    evts = events(tmp_path)
    assert max_concurrency(evts) == 2
    starts = [e for e in evts if e["event"] == "start"]
    assert sorted({e["devices"] for e in starts}) == ["0", "1"]


def test_a_crashed_job_fails_and_releases_its_gpu(recipe, tmp_path):
    jobs = [
        make_job(recipe, tmp_path, "crashes", crash=1, sleep=0.1),
        make_job(recipe, tmp_path, "after", sleep=0.1),
    ]
    statuses = run_pool(jobs, devices=["0"], lock_dir=tmp_path / "locks")
    assert statuses == {"crashes": "failed", "after": "completed"}
    assert "task" not in (tmp_path / "runs" / "crashes" / "launcher.log").read_text()


def test_a_lease_held_by_another_process_is_respected(recipe, tmp_path):
    import fcntl

    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    with open(lock_dir / "device-0.lock", "w") as held:  # another sweep's job holds GPU 0
        fcntl.flock(held, fcntl.LOCK_EX)
        run_pool([make_job(recipe, tmp_path, "only", sleep=0.1)], devices=["0", "1"], lock_dir=lock_dir)
    assert events(tmp_path)[0]["devices"] == "1"


def test_multi_gpu_job_runs_under_torchrun(recipe, tmp_path):
    job = make_job(recipe, tmp_path, "wide", gpus=2, sleep=0.1)
    assert run_pool([job], devices=["0", "1", "2"], lock_dir=tmp_path / "locks") == {"wide": "completed"}
    starts = [e for e in events(tmp_path) if e["event"] == "start"]
    assert sorted(e["rank"] for e in starts) == ["0", "1"]
    assert {e["devices"] for e in starts} == {"0,1"}


def test_pool_refuses_a_job_larger_than_the_pool(recipe, tmp_path):
    with pytest.raises(ValueError, match="needs 4 GPUs"):
        run_pool([make_job(recipe, tmp_path, "huge", gpus=4)], devices=["0"], lock_dir=tmp_path / "locks")


def test_local_runs_jobs_in_turn(recipe, tmp_path):
    jobs = [make_job(recipe, tmp_path, f"job{i}", gpus=0, sleep=0.2) for i in range(2)]
    assert run_local(jobs) == {"job0": "completed", "job1": "completed"}
    assert max_concurrency(events(tmp_path)) == 1


def test_slurm_array_script_runs_the_task_it_is_given(recipe, tmp_path):
    jobs = [make_job(recipe, tmp_path, f"job{i}", sleep=0) for i in range(3)]
    (script,) = write_array_scripts(jobs, tmp_path / "slurm", name="demo", root=tmp_path, max_parallel=2)
    text = script.read_text()
    assert "#SBATCH --array=0-2%2" in text and "#SBATCH --gres=gpu:1" in text
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1"}
    started = time.time()
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True)
    ran = [e["job"] for e in events(tmp_path) if e["event"] == "start" and e["t"] >= started]
    assert ran == ["job1"]
    assert json.loads((tmp_path / "runs" / "job1" / "result.json").read_text())["status"] == "completed"
    assert not Path(tmp_path / "runs" / "job0" / "result.json").exists()
