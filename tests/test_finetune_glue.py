"""recipes/finetune_glue.py end to end on a tiny random RoBERTa and GLUE-shaped local data: each input
kind, learning, resume, gradient accumulation, divergence, skipping, and the clear stops."""

import math
import os
import subprocess
import sys

import pytest
import torch

import recipes.finetune_glue as recipe
from alphaadam.paths import CONFIG_DIR
from alphaadam.runs import read_result, run_dir_for, variant_hash
from alphaadam.runs.metrics import MetricsLog
from alphaadam.sweep.job import Job
from alphaadam.train.config import ConfigError
from tests.glue_helpers import glue_config, quick_args
from tests.pretrain_helpers import REPO
from tests.run_helpers import interrupt_at, records

pytestmark = pytest.mark.usefixtures("quick_recipe_runs")


def run(tmp_path, tiny_roberta, glue_data, *overrides):
    cfg = glue_config(tmp_path, tiny_roberta, glue_data, *overrides)
    return cfg, recipe.train(cfg)


@pytest.mark.parametrize(
    "task, metrics",
    [
        ("sst2", {"accuracy"}),  # single sentence
        ("mrpc", {"accuracy", "f1"}),  # sentence pair
        ("stsb", {"pearson", "spearman"}),  # regression
        ("mnli", {"accuracy", "accuracy_mismatched", "val_loss_mismatched"}),  # 3 classes, 2 splits
    ],
)
def test_each_input_kind_writes_its_metrics(tmp_path, tiny_roberta, glue_data, task, metrics):
    cfg, result = run(tmp_path, tiny_roberta, glue_data, f"task=glue/{task}")
    run_dir = run_dir_for(cfg)
    assert result == read_result(run_dir) and result["status"] == "completed"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.yaml",
        "metrics.jsonl",
        "result.json",
        "run.lock",
    ]
    assert result["identity"] == {
        "optimizer": "adamw",
        "lr": 1e-3,
        "seed": 0,
        "model": "tiny_roberta",
        "task": task,  # as configs/report/table1_glue.yaml selects it, without the glue/ prefix
        "epochs": 2,
        "variant": variant_hash(cfg),
    }
    m = result["metrics"]
    assert set(m["best"]) - {"undefined"} == metrics | {"val_loss"}
    assert set(m["final"]) - {"undefined"} == metrics | {"val_loss", "train_loss", "step"}
    assert m["best_step"] in (6, 12) and m["best_epoch"] in (1.0, 2.0) and m["final"]["step"] == 12
    assert all(-1.0 <= m["final"][k] <= 1.0 for k in metrics if "loss" not in k)  # fractions
    evaluations = [r for r in MetricsLog(run_dir).read() if "val_loss" in r]
    assert [(r["step"], r["epoch"]) for r in evaluations] == [(6, 1.0), (12, 2.0)]
    assert result["step"] == result["total_steps"] == 12 and result["epoch"] == 2.0 and result["tokens"] > 0
    assert result["timing"]["samples_per_s"] > 0 and result["memory"]["optimizer_state_bytes_per_param"] == (
        pytest.approx(8.0, abs=0.01)
    )


def test_a_single_sentence_task_is_learnt(tmp_path, tiny_roberta, glue_data):
    cfg, result = run(
        tmp_path,
        tiny_roberta,
        glue_data,
        "task=glue/sst2",
        "trainer.epochs=6",
        "optimizer.lr=3e-3",
        "optimizer=alphaadam",
    )
    evaluations = [r for r in records(cfg) if "accuracy" in r]
    assert len(evaluations) == 6 and evaluations[-1]["val_loss"] < evaluations[0]["val_loss"] - 0.05
    assert result["metrics"]["best"]["accuracy"] >= 0.9  # the sentiment word decides the label
    lrs = [r["lr"] for r in records(cfg) if "lr" in r]
    assert lrs[0] < lrs[2] and lrs[-1] < lrs[2]  # linear warm-up (6 % of 36 steps) and decay


@pytest.mark.parametrize("optimizer", ["ldadam", "alphaadam"])
def test_interrupted_run_resumes_to_the_same_losses(
    tmp_path, tiny_roberta, glue_data, monkeypatch, optimizer
):
    overrides = (
        "task=glue/mrpc",
        f"optimizer={optimizer}",
        "trainer.checkpoint_every=4",
        "trainer.mask_stats_every=3",
        "trainer.keep_checkpoint=true",
    )
    uninterrupted, _ = run(tmp_path / "a", tiny_roberta, glue_data, *overrides)
    resumed = glue_config(tmp_path / "b", tiny_roberta, glue_data, *overrides)
    monkeypatch.setattr(recipe, "divergence", interrupt_at(recipe, 10))
    with pytest.raises(KeyboardInterrupt):
        recipe.train(resumed)
    result = read_result(run_dir_for(resumed))
    assert result["status"] == "running" and "interrupted" in result["error"]
    assert Job("", (), run_dir_for(resumed)).status() == "interrupted"  # a sweep resumes it
    assert max(r["step"] for r in records(resumed)) == 9  # logged past the checkpoint at step 8
    monkeypatch.setattr(recipe, "divergence", recipe.divergence.real)
    assert recipe.train(resumed)["status"] == "completed"
    # Bitwise: losses, rates, gradient norms, metrics, alphas and mask densities (LDAdam's error
    # feedback buffer travels in the checkpoint with the optimizer state).
    assert records(resumed) == records(uninterrupted)
    assert read_result(run_dir_for(resumed))["metrics"] == read_result(run_dir_for(uninterrupted))["metrics"]


def test_gradient_accumulation_matches_one_pass(tmp_path, tiny_roberta, glue_data):
    common = ("task=glue/stsb", "model.dropout=0.0", "model.classifier_dropout=0.0")
    whole, _ = run(tmp_path / "whole", tiny_roberta, glue_data, *common)
    parts, _ = run(
        tmp_path / "parts", tiny_roberta, glue_data, *common, "trainer.micro_batch_size=3"
    )  # 3+3+2
    a, b = records(whole), records(parts)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    # Float rounding differs (each micro-batch is padded to its own longest example); the correlation
    # of a barely trained model's nearly constant predictions magnifies it.
    for ra, rb in zip(a, b, strict=True):
        for key, tolerance in (("train_loss", 1e-5), ("val_loss", 1e-5), ("pearson", 1e-3)):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=tolerance)


def test_divergence_ends_the_run_and_it_is_not_rerun(tmp_path, tiny_roberta, glue_data, capsys):
    cfg, result = run(tmp_path, tiny_roberta, glue_data, "task=glue/rte", "trainer.max_loss=0.01")
    assert result["status"] == "diverged" and "above trainer.max_loss=0.01" in result["error"]
    assert result["step"] == 1 and "DIVERGED at step 1" in capsys.readouterr().out
    assert not (run_dir_for(cfg) / "checkpoint.pt").exists()
    assert recipe.train(cfg)["status"] == "diverged"
    assert "already diverged, skipping" in capsys.readouterr().out


def test_completed_run_is_skipped_and_display_settings_keep_its_directory(
    tmp_path, tiny_roberta, glue_data, capsys
):
    cfg, first = run(tmp_path, tiny_roberta, glue_data, "task=glue/cola", "trainer.epochs=1")
    assert recipe.train(cfg) == first and "already completed, skipping" in capsys.readouterr().out
    same = glue_config(
        tmp_path, tiny_roberta, glue_data, "task=glue/cola", "trainer.epochs=1", "trainer.log_every=5"
    )
    assert run_dir_for(same) == run_dir_for(cfg)
    other = glue_config(tmp_path, tiny_roberta, glue_data, "task=glue/cola", "trainer.epochs=1", "seed=1")
    assert run_dir_for(other) != run_dir_for(cfg)


def test_several_processes_are_refused(tmp_path, tiny_roberta, glue_data, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="runs on one device"):
        recipe.train(glue_config(tmp_path, tiny_roberta, glue_data))
    assert not any(tmp_path.iterdir())


def cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "recipes/finetune_glue.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_command_line_stops_print_one_line_and_exit_2(tmp_path, tiny_roberta, glue_data):
    args = quick_args(tmp_path, tiny_roberta, glue_data)
    for extra, message in (
        (["model.path=/nonexistent/roberta-base"], "model.path=/nonexistent/roberta-base is not a directory"),
        (["+trainer.epochz=3"], "trainer.epochz"),
        (["task=glue/qnli"], "no files for GLUE task 'qnli'"),
    ):
        result = cli(*args, *extra)
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr and "Traceback" not in result.stderr
    if not torch.cuda.is_available():
        result = cli(f"run.root={tmp_path}", "experiment=paper/glue_roberta")
        assert (
            result.returncode == 2 and "asks for a GPU" in result.stderr and "Traceback" not in result.stderr
        )
    assert not any(p.name != "finetune_glue" for p in tmp_path.iterdir())


def test_the_study_runs_fill_table_1(tmp_path, tiny_roberta, glue_data):
    """Runs of experiment=paper/glue_roberta (tiny stand-ins) are what configs/report/table1_glue.yaml
    selects: each (method, task) cell is the best learning rate's mean over seeds."""
    from alphaadam.report.build import write_tables

    runs = tmp_path / "runs"
    studied = [("adamw", "glue/mrpc", "1e-3"), ("alphaadam", "glue/stsb", "1e-3")]
    studied += [("alphaadam", "glue/mrpc", lr) for lr in ("1e-4", "3e-3")]
    f1 = {}
    for optimizer, task, lr in studied:
        cfg = glue_config(
            runs,
            tiny_roberta,
            glue_data,
            "experiment=paper/glue_roberta",
            "logger=none",
            "trainer.device=cpu",
            "trainer.epochs=1",
            f"task={task}",
            f"optimizer={optimizer}",
            f"optimizer.lr={lr}",
        )
        result = recipe.train(cfg)
        assert result["status"] == "completed" and result["identity"]["task"] == task.split("/")[1]
        f1[optimizer, task, lr] = result["metrics"]["best"].get("f1")
    lines = []
    (markdown, *_) = write_tables(["table1_glue"], roots=[runs], out_dir=tmp_path / "out", log=lines.append)
    assert "3/42 cells with a value" in lines[0]
    table = markdown.read_text().splitlines()
    row = next(line for line in table if line.startswith("| AlphaAdam |"))
    mrpc, stsb, cola = (c.strip() for c in row.strip("|").split("|")[1:4])
    best = max(f1["alphaadam", "glue/mrpc", lr] for lr in ("1e-4", "3e-3"))
    # the better learning rate's F1, and its difference to AdamW's on the same seed
    assert mrpc.replace("**", "").startswith(f"{100 * best:.2f} (n=1; Δ ")
    assert "(n=1" in stsb and cola == "—"
    paper = table[table.index(row) + 1]
    assert paper.startswith("| *paper (Δ)* | 88.97 (")  # the published number, and ours minus it


def table_1_optimizers() -> list[str]:
    from alphaadam.sweep.spec import load_spec

    return list(load_spec(CONFIG_DIR, "paper/glue_roberta").optimizers)


@pytest.mark.parametrize("optimizer", table_1_optimizers())
def test_every_optimizer_of_the_study_fine_tunes(tmp_path, tiny_roberta, glue_data, optimizer):
    cfg, result = run(tmp_path, tiny_roberta, glue_data, f"optimizer={optimizer}", "trainer.epochs=1")
    assert result["status"] == "completed" and result["identity"]["optimizer"] == optimizer
    assert math.isfinite(result["metrics"]["final"]["train_loss"])
    assert result["memory"]["optimizer_state_bytes"] > 0
