"""recipes/pretrain_gpt.py end to end on the embedded corpus: learning, resume, skip, divergence,
out-of-memory, failures, W&B, data parallelism, and the command line's clear stops."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import recipes.pretrain_gpt as recipe
from alphaadam.data.tokens import DataMissing
from alphaadam.models.gpt import GPT
from alphaadam.report.collect import collect
from alphaadam.report.select import configurations, select_cell
from alphaadam.report.spec import parse_spec
from alphaadam.report.tables import build_table, to_markdown
from alphaadam.runs import read_result, run_dir_for, variant_hash
from alphaadam.runs.loggers import wandb_run_id
from alphaadam.runs.metrics import MetricsLog
from alphaadam.sweep.job import Job
from alphaadam.train.config import compose
from tests.pretrain_helpers import REPO, gpt_config, quick_args
from tests.run_helpers import interrupt_at, records

pytestmark = pytest.mark.usefixtures("quick_recipe_runs")


def subprocess_env(**extra) -> dict:
    """The same settings for a child process (the same thread count keeps results bitwise equal)."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ALPHAADAM_BACKEND": "eager",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "recipes/pretrain_gpt.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )


def test_loss_decreases_and_the_run_directory_is_complete(tmp_path, data_dir):
    # The tiny preset as the demo runs it (4 x 64 tokens per step), with AlphaAdam.
    cfg = gpt_config(tmp_path, data_dir, "optimizer=alphaadam", "trainer.max_steps=60")
    cfg.model.block_size, cfg.model.micro_batch_size = 64, 4
    cfg.trainer.eval_every, cfg.trainer.mask_stats_every = 20, 30
    result = recipe.train(cfg)
    run_dir = run_dir_for(cfg)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.pt",
        "config.yaml",
        "metrics.jsonl",
        "result.json",
        "run.lock",
    ]
    assert result == read_result(run_dir) and result["status"] == "completed"
    records = MetricsLog(run_dir).read()
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert val[0] > 8.0 and val[-1] < val[0] - 2.0  # from ~ln(5184) = 8.55 to well below
    train_losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert sum(train_losses[-10:]) < sum(train_losses[:10]) - 10
    at_20 = next(r for r in records if r["step"] == 20)
    fields = ("step", "tokens", "time_s", "lr", "train_loss", "val_loss", "grad_norm", "tokens_per_s")
    assert set(at_20) == {*fields, "peak_bytes"}
    masked = [r for r in records if "mask_stats" in r]
    assert [r["step"] for r in masked] == [30, 60]
    names = {s["name"] for s in masked[0]["mask_stats"]}
    assert {"transformer.wte.weight", "transformer.h.0.attn.c_attn.weight"} <= names
    assert all(s["alpha"] >= 1 and 0 <= s["density"] <= 1 for s in masked[0]["mask_stats"])
    # result.json: the schema that sweeps and reports read.
    assert result["identity"] == {
        "optimizer": "alphaadam",
        "lr": 3e-3,
        "seed": 0,
        "model": "tiny",
        "task": "embedded",
        "steps": 60,
        "variant": variant_hash(cfg),
    }
    metrics = result["metrics"]
    assert metrics["final"]["val_loss"] == val[-1] and metrics["best"]["val_loss"] == min(val)
    assert set(metrics["at_fraction"]) == {"0.2", "0.4", "0.6", "1.0"}
    assert metrics["at_fraction"]["0.2"]["step"] == 12 and metrics["at_fraction"]["1.0"]["step"] == 60
    assert result["timing"]["tokens_per_s"] > 0 and result["timing"]["mfu"] is None  # no MFU on a CPU
    assert result["memory"]["optimizer_state_bytes_per_param"] == pytest.approx(
        8.0, abs=0.01
    )  # 2 fp32 moments
    assert result["tokens"] == 60 * 4 * 64 and result["versions"]["torch"] == torch.__version__


def test_interrupted_run_resumes_to_the_same_losses(tmp_path, data_dir, monkeypatch):
    overrides = ("optimizer=alphaadam", "trainer.checkpoint_every=8", "trainer.mask_stats_every=4")
    uninterrupted = gpt_config(tmp_path / "a", data_dir, *overrides)
    recipe.train(uninterrupted)

    resumed = gpt_config(tmp_path / "b", data_dir, *overrides)
    monkeypatch.setattr(recipe, "divergence", interrupt_at(recipe, 13))
    with pytest.raises(KeyboardInterrupt):
        recipe.train(resumed)
    result = read_result(run_dir_for(resumed))
    assert result["status"] == "running" and "interrupted" in result["error"]
    assert Job("", (), run_dir_for(resumed)).status() == "interrupted"  # a sweep resumes it
    assert max(r["step"] for r in records(resumed)) == 12  # logged past the checkpoint at step 8
    monkeypatch.setattr(recipe, "divergence", recipe.divergence.real)
    assert recipe.train(resumed)["status"] == "completed"
    # Bitwise: training and validation losses, learning rates, gradient norms, alphas and densities.
    assert records(resumed) == records(uninterrupted)
    assert read_result(run_dir_for(resumed))["metrics"] == read_result(run_dir_for(uninterrupted))["metrics"]


def test_killed_process_resumes_to_the_same_losses(tmp_path, data_dir):
    overrides = ("trainer.max_steps=200", "trainer.checkpoint_every=25", "trainer.eval_every=50")
    killed = gpt_config(tmp_path / "b", data_dir, *overrides)
    log = MetricsLog(run_dir_for(killed))
    proc = subprocess.Popen(
        [sys.executable, "recipes/pretrain_gpt.py", *quick_args(tmp_path / "b", data_dir, *overrides)],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any(r["step"] >= 30 for r in log.read()):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_result(run_dir_for(killed))["status"] == "running"  # killed without a word
    assert 30 <= max(r["step"] for r in log.read()) < 200
    assert recipe.train(killed)["status"] == "completed"
    uninterrupted = gpt_config(tmp_path / "a", data_dir, *overrides)
    recipe.train(uninterrupted)
    assert records(killed) == records(uninterrupted)


def test_completed_run_is_skipped(tmp_path, data_dir, capsys):
    cfg = gpt_config(tmp_path, data_dir, "trainer.max_steps=3")
    first = recipe.train(cfg)
    stamp = os.stat(run_dir_for(cfg) / "metrics.jsonl").st_mtime_ns
    assert recipe.train(cfg) == first
    assert "already completed, skipping" in capsys.readouterr().out
    assert os.stat(run_dir_for(cfg) / "metrics.jsonl").st_mtime_ns == stamp
    # Settings outside the run's identity (logging, progress) lead to the same directory.
    same = gpt_config(tmp_path, data_dir, "trainer.max_steps=3", "trainer.log_every=7", "logger=wandb")
    assert run_dir_for(same) == run_dir_for(cfg)
    assert run_dir_for(gpt_config(tmp_path, data_dir, "trainer.max_steps=4")) != run_dir_for(cfg)


def nan_after(calls: int):
    """GPT.forward, with a NaN training loss after ``calls`` training forwards."""
    real_forward = GPT.forward
    count = {"n": 0}

    def forward(self, idx, targets=None):
        logits, loss = real_forward(self, idx, targets)
        if self.training:
            count["n"] += 1
            if count["n"] > calls:
                loss = loss * float("nan")
        return logits, loss

    return forward


nan_after.real = GPT.forward


def test_nan_loss_ends_the_run_as_diverged(tmp_path, data_dir, monkeypatch, capsys):
    cfg = gpt_config(tmp_path, data_dir)
    monkeypatch.setattr(GPT, "forward", nan_after(5))
    result = recipe.train(cfg)  # returns normally: a sweep carries on
    assert result["status"] == "diverged" and "nan" in result["error"] and "step 6" in result["error"]
    assert result["step"] == 6
    assert "DIVERGED at step 6" in capsys.readouterr().out
    assert MetricsLog(run_dir_for(cfg)).read()[-1]["train_loss"] == "nan"
    monkeypatch.setattr(GPT, "forward", nan_after.real)
    assert recipe.train(cfg)["status"] == "diverged"  # it would diverge again: not rerun


def test_loss_above_the_bound_diverges_with_exit_code_0(tmp_path, data_dir):
    run = cli(*quick_args(tmp_path, data_dir, "trainer.max_loss=7.0"))
    assert run.returncode == 0, run.stderr
    assert "DIVERGED at step 1" in run.stdout and "above trainer.max_loss=7" in run.stdout
    (result_file,) = tmp_path.glob("*/*/result.json")
    assert json.loads(result_file.read_text())["status"] == "diverged"


def test_out_of_memory_is_recorded_and_swallowed(tmp_path, data_dir, monkeypatch):
    def oom(self, idx, targets=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(GPT, "forward", oom)
    cfg = gpt_config(tmp_path, data_dir)
    assert recipe.train(cfg)["status"] == "oom"
    assert "out of memory" in read_result(run_dir_for(cfg))["error"]


def test_other_errors_are_recorded_and_raised(tmp_path, data_dir, monkeypatch):
    def boom(self, idx, targets=None):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(GPT, "forward", boom)
    cfg = gpt_config(tmp_path, data_dir)
    with pytest.raises(RuntimeError, match="boom"):
        recipe.train(cfg)
    result = read_result(run_dir_for(cfg))
    assert result["status"] == "failed" and result["error"] == "RuntimeError: boom"


def test_wandb_offline_run_has_a_deterministic_id_and_is_resumed(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = gpt_config(tmp_path, data_dir, "logger=wandb", "trainer.max_steps=4", "trainer.checkpoint_every=2")
    monkeypatch.setattr(recipe, "divergence", interrupt_at(recipe, 3))
    with pytest.raises(KeyboardInterrupt):
        recipe.train(cfg)
    monkeypatch.setattr(recipe, "divergence", recipe.divergence.real)
    assert recipe.train(cfg)["status"] == "completed"
    run_dir = run_dir_for(cfg)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["wandb_id"] == wandb_run_id("pretrain_gpt", run_dir)
    sessions = sorted((run_dir / "wandb").glob("offline-run-*"))
    # offline-run-<time>-<id>, with "-1" after it when both sessions started in the same second
    assert len(sessions) == 2 and all(f"-{checkpoint['wandb_id']}" in s.name for s in sessions)


def test_bfloat16_autocast_on_cpu(tmp_path, data_dir):
    result = recipe.train(gpt_config(tmp_path, data_dir, "trainer.dtype=bfloat16", "trainer.max_steps=5"))
    assert result["status"] == "completed" and result["metrics"]["final"]["val_loss"] < 9


def test_data_parallel_on_two_cpu_processes_matches_accumulation(tmp_path, data_dir):
    """torchrun with 2 processes (gloo) sees the same batches as one process accumulating 2."""
    common = ("trainer.max_steps=6", "trainer.tokens_per_step=256")
    single = gpt_config(tmp_path / "one", data_dir, *common)
    recipe.train(single)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(
        [*torchrun, "recipes/pretrain_gpt.py", *quick_args(tmp_path / "two", data_dir, *common)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env=subprocess_env(),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("completed 6 steps") == 1  # rank 0 prints, the other is silent
    assert "(2 x 1 x 4 x 32)" in run.stdout
    a, b = records(single), records(gpt_config(tmp_path / "two", data_dir, *common))
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-4)


def test_no_gpu_stops_at_once_with_a_clear_message(tmp_path):
    run = cli(f"run.root={tmp_path}", "experiment=paper/gpt2_pretrain", "model=gpt2_125m")
    assert run.returncode == 2
    assert "asks for a GPU" in run.stderr and "Traceback" not in run.stderr
    assert not any(tmp_path.iterdir())


def test_missing_data_stops_with_the_command_that_prepares_it(tmp_path):
    cfg = compose(
        "pretrain_gpt", [f"run.root={tmp_path}", "experiment=paper/gpt2_pretrain", "trainer.device=cpu"]
    )
    cfg.data.dir = str(tmp_path / "owt")
    with pytest.raises(DataMissing, match=f"python scripts/prepare_openwebtext.py --out {tmp_path / 'owt'}"):
        recipe.train(cfg)
    assert not any(tmp_path.iterdir())


VARIANTS_SPEC = """
title: Variants
runs: {recipe: pretrain_gpt}
rows: {key: optimizer, items: [{value: alphaadam, label: AlphaAdam}]}
columns: [{label: Final, metric: metrics.final.val_loss}]
values: {higher_is_better: false}
"""


def test_runs_differing_only_in_compensation_are_different_table_configurations(tmp_path, data_dir):
    """Configurations never merge: the hand-picked identity fields cannot tell these runs apart, the
    variant can; seeds of one configuration are still averaged."""
    root = tmp_path / "runs"
    common = ("optimizer=alphaadam", "trainer.max_steps=3", "trainer.eval_every=3")
    variants = {
        "norm_ratio s0": ("seed=0",),
        "norm_ratio s1": ("seed=1",),
        "cautious_mean s0": ("seed=0", "optimizer.compensation=cautious_mean"),
    }
    results = {}
    for name, overrides in variants.items():
        results[name] = recipe.train(gpt_config(root, data_dir, *common, *overrides))
    identities = {name: r["identity"] for name, r in results.items()}
    # The hand-picked fields cannot tell the compensations apart; the variant does, and ignores the seed.
    plain = {
        name: {k: v for k, v in i.items() if k not in ("seed", "variant")} for name, i in identities.items()
    }
    assert plain["norm_ratio s0"] == plain["cautious_mean s0"]
    assert identities["norm_ratio s0"]["variant"] == identities["norm_ratio s1"]["variant"]
    assert identities["norm_ratio s0"]["variant"] != identities["cautious_mean s0"]["variant"]
    cfg = gpt_config(root, data_dir, *common, "seed=0")
    assert identities["norm_ratio s0"]["variant"] == variant_hash(cfg)

    df = collect([root], log=None)
    spec = parse_spec(yaml.safe_load(VARIANTS_SPEC), default_name="variants")
    configs = configurations(df, spec, "metrics.final.val_loss")
    assert sorted(configs["n"]) == [1, 2]  # two seeds of one, one seed of the other: never three
    row, column = spec.rows[0], spec.columns[0]
    cell = select_cell(df, spec, row, column)
    assert cell.variants == 2 and cell.config["variant"] in {i["variant"] for i in identities.values()}
    assert "best of 2 variants" in to_markdown(build_table(df, spec))

    # A result.json written before ``variant`` existed is read as before: grouped by its other fields.
    old = df.drop(columns=["identity.variant"])
    assert list(configurations(old, spec, "metrics.final.val_loss")["n"]) == [3]
    assert select_cell(old, spec, row, column).variants == 0
