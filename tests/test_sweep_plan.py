"""The sweep planner: per-optimizer grids, tasks, seeds, overrides, run directories and statuses."""

import json

import pytest
from sweep_tree import make_tree

from alphaadam.runs.lock import RunLock
from alphaadam.sweep.plan import plan, select, summary
from alphaadam.sweep.spec import load_spec


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


def jobs_of(tree, **updates):
    spec = load_spec(tree / "configs", "study", updates)
    return plan(spec, tree / "configs", tree / "recipes")


def write_status(job, status):
    job.run_dir.mkdir(parents=True, exist_ok=True)
    (job.run_dir / "result.json").write_text(json.dumps({"status": status}))


def test_each_optimizer_gets_its_own_grid(tree):
    jobs = jobs_of(tree)
    assert len(jobs) == (2 + 3) * 2 * 2  # (grid sizes) x tasks x seeds
    alpha = {j.tags["lr"] for j in jobs if j.tags["optimizer"] == "alphaadam"}
    assert alpha == {1e-3, 2e-3, 3e-3}
    assert len({j.run_dir for j in jobs}) == len(jobs)
    job = next(j for j in jobs if j.tags == {"optimizer": "alphaadam", "lr": 2e-3, "seed": 1, "task": "mrpc"})
    assert job.overrides == (
        "experiment=study",
        "optimizer=alphaadam",
        "optimizer.lr=0.002",
        "seed=1",
        "task=mrpc",
    )
    assert job.run_dir.parent == tree / "runs" / "study"
    assert job.run_dir.name.startswith("alphaadam-lr0.002-s1-")


def test_spec_updates_and_extra_overrides(tree):
    jobs = jobs_of(tree, seeds=[7], tasks=None)
    assert len(jobs) == 5 and {j.tags["seed"] for j in jobs} == {7}
    spec = load_spec(tree / "configs", "study")
    longer = plan(spec, tree / "configs", tree / "recipes", ["steps=99"])
    assert all(j.overrides[-1] == "steps=99" for j in longer)
    assert {j.run_dir for j in longer}.isdisjoint({j.run_dir for j in jobs_of(tree)})


def test_excluded_keys_do_not_change_the_run_directory(tree):
    spec = load_spec(tree / "configs", "study")
    quiet = plan(spec, tree / "configs", tree / "recipes", ["log_every=100"])
    assert [j.run_dir for j in quiet] == [j.run_dir for j in jobs_of(tree)]


def test_statuses_and_what_a_sweep_launches(tree):
    jobs = jobs_of(tree, tasks=None, seeds=[0])
    write_status(jobs[0], "completed")
    write_status(jobs[1], "failed")
    write_status(jobs[2], "diverged")
    write_status(jobs[3], "running")  # its process is gone: interrupted, resumed by the next sweep
    write_status(jobs[4], "running")
    with RunLock(jobs[4].run_dir):  # a live run belongs to someone else
        statuses = [j.status() for j in jobs]
        assert statuses == ["completed", "failed", "diverged", "interrupted", "running"]
        assert select(jobs) == [jobs[3]]
        assert select(jobs, only_failed=True) == [jobs[1]]
        assert summary(jobs) == (
            "5 jobs (1 completed, 1 running, 1 interrupted, 1 failed, 1 diverged), ~2 GPU-hours in all"
        )


@pytest.mark.parametrize(
    "updates,message",
    [
        (dict(lrs=[1.0]), "unknown key.*lrs"),
        (dict(lr={"alphaadam": [1e-3]}), "no lr grid for 'adamw'"),
        (dict(recipe="nope"), "recipe script .*nope.py does not exist"),
    ],
)
def test_bad_specs_say_what_is_wrong(tree, updates, message):
    with pytest.raises(ValueError, match=message):
        jobs_of(tree, **updates)


def test_unknown_sweep_lists_the_known_ones(tree):
    with pytest.raises(ValueError, match="available: study"):
        load_spec(tree / "configs", "studdy")
