"""The sweep planner: per-optimizer grids, tasks, seeds, overrides, run directories and statuses."""

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from alphaadam.runs.lock import RunLock
from alphaadam.sweep.plan import (
    JobComposer,
    job_overrides,
    own_value_overrides,
    plan,
    select,
    skipped_optimizers,
    summary,
)
from alphaadam.sweep.spec import load_spec
from tests.sweep_tree import make_tree


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
        (dict(recipe="nope"), "no recipe 'nope': .*nope.py does not exist"),
    ],
)
def test_bad_specs_say_what_is_wrong(tree, updates, message):
    with pytest.raises(ValueError, match=message):
        jobs_of(tree, **updates)


def test_unknown_sweep_lists_the_known_ones(tree):
    with pytest.raises(ValueError, match="available: study"):
        load_spec(tree / "configs", "studdy")


@pytest.mark.parametrize(
    "extra, shared",
    [
        ([], 4),  # one composition per (optimizer, task); lr and seed applied to copies
        (["steps=7"], 4),
        (["optimizer.lr=0.5"], 0),  # sets a job's own key again: each job is composed by Hydra
        (["+optimizer.eps=1e-6", "seed=3"], 0),
    ],
)
def test_shared_composition_gives_the_config_hydra_composes(tree, extra, shared):
    spec = load_spec(tree / "configs", "study")
    with initialize_config_dir(config_dir=str(tree / "configs"), version_base=None):
        composer = JobComposer("toy")
        for tags, overrides in job_overrides(spec):
            overrides = [*overrides, *extra]
            fast = composer(overrides, own_value_overrides(tags))
            assert OmegaConf.to_container(fast) == OmegaConf.to_container(compose("toy", overrides))
    assert len(composer.shared) == shared


def test_optimizers_the_library_lacks_are_named_and_left_out(tree, capsys):
    (tree / "configs" / "sweep" / "more.yaml").write_text(
        "recipe: toy\nexperiment: study\noptimizers: [adamw, lion, cadamw]\nlr: [1.0e-3]\nseeds: [0]\n"
    )
    spec = load_spec(tree / "configs", "more")
    assert skipped_optimizers(spec, tree / "configs") == {
        "lion": "not in the optimizer registry",
        "cadamw": "no configs/optimizer/cadamw.yaml",
    }
    jobs = plan(spec, tree / "configs", tree / "recipes")
    assert [j.tags["optimizer"] for j in jobs] == ["adamw"]


def test_gpu_hours_can_be_given_per_task(tree):
    jobs = jobs_of(tree, gpu_hours_per_job={"default": 0.25, "mrpc": 1.0})
    hours = {(j.tags["task"], j.gpu_hours) for j in jobs}
    assert hours == {("rte", 0.25), ("mrpc", 1.0)}
    assert summary(jobs).endswith("~12 GPU-hours in all")  # 10 jobs per task x (0.25 + 1.0)
