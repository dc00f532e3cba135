"""scripts/gpu_check.py: refuses without a GPU, and runs end to end at smoke sizes on the CPU."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gpu_check  # noqa: E402

CPU_PARTS = ["step_time", "launches", "pretrain", "glue"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_refuses_in_one_line_without_a_gpu(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA GPU" in err and "--device cpu --smoke" in err
    assert not any(tmp_path.iterdir())
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path)]) == 2  # full sizes need a GPU
    assert "only with --smoke" in capsys.readouterr().err


@pytest.fixture
def eager(monkeypatch):
    # The smoke run checks the script, not torch.compile's warm-up on a busy CPU.
    monkeypatch.setenv("ALPHAADAM_BACKEND", "eager")


def smoke(tmp_path, parts) -> tuple[int, dict]:
    code = gpu_check.main(["--device", "cpu", "--smoke", "--parts", *parts, "--out", str(tmp_path)])
    return code, json.loads((tmp_path / "gpu_check.json").read_text())


def test_smoke_run_writes_one_table_of_every_cpu_part(tmp_path, eager):
    code, record = smoke(tmp_path, CPU_PARTS)
    rows = record["rows"]
    assert code == 0, [r for r in rows if r["metric"] == "error"]
    assert record["smoke"] is True and set(record["seconds"]) == set(CPU_PARTS)

    steps = [r for r in rows if r["part"] == "step_time"]
    assert [r["optimizer"] for r in steps] == ["adamw_fused", "alphaadam", "cadamw", "alphasgd"] * 2
    assert {r["case"].rsplit(", ", 1)[1] for r in steps} == {"float32", "bfloat16"}
    for r in steps:
        assert r["value"] > 0
        if r["optimizer"] == "adamw_fused":
            assert r["ratio"] == 1.0 and r["note"] == ""
        else:  # a new random gradient every step: the mask is far from full
            density = float(r["note"].removeprefix("mask density "))
            assert 0.3 < density < 0.95, r

    launches = {r["optimizer"]: r for r in rows if r["part"] == "launches"}
    assert launches.keys() == {"adamw_fused", "alphaadam", "cadamw", "alphasgd"}
    for r in launches.values():
        assert r["metric"] == "ATen ops per step" and isinstance(r["value"], int) and r["value"] > 0
        counts, by_count = r["note"].split(": ")
        assert counts == "2 / 4 / 8 tensors of 64 x 64" and all(int(c) > 0 for c in by_count.split(" / "))
    assert launches["adamw_fused"]["note"].endswith(": 4 / 4 / 4")  # one fused call, whatever the count

    pretrain = [r for r in rows if r["part"] == "pretrain"]
    assert [(r["optimizer"], r["metric"]) for r in pretrain] == [
        (name, metric) for name in ("adamw", "alphaadam") for metric in ("tokens/s", "MFU")
    ]
    assert all(r["value"] > 0 for r in pretrain if r["metric"] == "tokens/s")

    glue = {r["optimizer"]: r for r in rows if r["part"] == "glue"}
    assert list(glue) == ["adamw", "adam_mini", "galore", "ldadam", "cadamw", "alphaadam"]
    assert glue["adamw"]["ratio"] == 1.0 and all(r["value"] > 0 for r in glue.values())

    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| ") == len(rows) + 1  # the header row and one line per row
    assert "smoke sizes" in table


def test_a_failing_part_is_a_row_and_the_exit_status(tmp_path, eager, monkeypatch):
    def broken(plan, device):
        raise ValueError("no such shape")

    monkeypatch.setattr(gpu_check, "glue", broken)
    code, record = smoke(tmp_path, ["glue", "launches"])
    assert code == 1
    assert record["rows"][0] == gpu_check.row("glue", "", "", "error", None, note="ValueError: no such shape")
    assert any(r["part"] == "launches" for r in record["rows"])  # the next part still ran


def test_smoke_fsdp2_part_matches_the_unsharded_model(tmp_path, eager):
    code, record = smoke(tmp_path, ["fsdp2"])
    assert code == 0, record["rows"]
    diff = next(r for r in record["rows"] if r["metric"].startswith("max |param"))
    assert diff["value"] <= 1e-6
