"""Run-directory basics: atomic files, names from configs, the metrics log, the run lock."""

import os
import stat

import pytest
from omegaconf import OmegaConf

from alphaadam.runs import MetricsLog, read_result, run_dir_for, write_json, write_result
from alphaadam.runs.lock import RunLock, RunLocked, is_live


def cfg(**over):
    base = {
        "experiment": "demo",
        "seed": 0,
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "trainer": {"steps": 10, "log_every": 1},
        "run": {
            "root": "/r",
            "label": "${optimizer.name}-s${seed}",
            "exclude": ["trainer.log_every"],
            "dir": None,
        },
    }
    return OmegaConf.merge(base, over)


def test_run_dir_is_named_from_the_config_without_excluded_keys():
    a = run_dir_for(cfg())
    assert a.parent.as_posix() == "/r/demo" and a.name.startswith("adamw-s0-")
    assert run_dir_for(cfg(trainer={"log_every": 50})) == a
    assert run_dir_for(cfg(trainer={"steps": 11})) != a
    assert run_dir_for(cfg(run={"root": "/elsewhere"})).name == a.name
    assert run_dir_for(cfg(run={"dir": "/explicit"})).as_posix() == "/explicit"


def test_atomic_writes_follow_the_umask_and_leave_no_temporaries(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_result_status_is_validated(tmp_path):
    with pytest.raises(ValueError, match="status"):
        write_result(tmp_path, {"status": "done"})
    write_result(tmp_path, {"status": "diverged"})
    assert read_result(tmp_path)["status"] == "diverged"
    assert read_result(tmp_path / "missing") is None


def test_metrics_log_truncates_past_a_checkpoint(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.append({"step": step, "loss": float("nan") if step == 5 else 1.0 / step})
    assert log.read()[-1]["loss"] == "nan"
    log.truncate_after(3)
    assert [r["step"] for r in log.read()] == [1, 2, 3]


def test_run_lock_marks_a_live_run(tmp_path):
    assert not is_live(tmp_path)
    with RunLock(tmp_path):
        assert is_live(tmp_path)
        with pytest.raises(RunLocked, match=rf"trained by process {os.getpid()} on .*run.lock"):
            RunLock(tmp_path).acquire()
    assert not is_live(tmp_path)
