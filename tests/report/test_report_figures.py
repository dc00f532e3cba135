import json

import pytest
import yaml

from alphaadam.report.collect import collect
from alphaadam.report.errors import MetricsFileError, ReportError
from alphaadam.report.figures import bench_figure, curve, loss_figure, make_figures, read_metrics
from alphaadam.report.select import select_cells
from alphaadam.report.spec import load_spec, parse_spec
from tests.report.report_fixtures import GLUE_SPEC, glue_runs, write_run


def assert_images(paths, stems):
    assert sorted(p.name for p in paths) == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "pdf"))
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000, path
        assert data.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path


def test_ablation_figures(tmp_path, ablation):
    spec_path, runs = ablation
    notes = []
    paths = make_figures(collect([runs], log=None), load_spec(spec_path), tmp_path / "out", log=notes.append)
    stems = ["loss_val_loss", "loss_train_loss", "lr_sensitivity", "alpha_final", "alpha_training"]
    stems += ["alpha_heatmap", "resources"]
    assert_images(paths, [f"fixture_ablation_{s}" for s in stems])
    assert notes == []


def test_one_panel_per_task(tmp_path):
    spec = yaml.safe_load(GLUE_SPEC)
    spec["figures"] = {"loss_curves": {"y": ["train_loss"], "x": ["step"]}, "lr_sensitivity": True}
    spec["figures"] |= {"alpha": True, "resources": True}
    paths = make_figures(
        collect([glue_runs(tmp_path / "runs")], log=None), parse_spec(spec, default_name="glue"), tmp_path
    )
    stems = [
        "loss_train_loss",
        "lr_sensitivity",
        "alpha_final",
        "alpha_training",
        "alpha_heatmap",
        "resources",
    ]
    assert_images(paths, [f"glue_{s}" for s in stems])


def dashed_lines(fig):
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_the_speed_target_is_a_dashed_line_in_its_loss_figure(tmp_path):
    finals = {"adamw": (3.2, 3.3), "alphaadam": (3.0, 3.1)}
    for optimizer, values in finals.items():
        for seed, final in enumerate(values):
            write_run(tmp_path / "runs", optimizer=optimizer, lr=1e-3, seed=seed, final=final)
    spec = parse_spec(
        {
            "title": "speed",
            "rows": {"key": "optimizer", "items": [{"value": "adamw", "label": "AdamW"}, "alphaadam"]},
            "columns": [{"label": "loss", "metric": "metrics.final.val_loss"}],
            "values": {"higher_is_better": False},
            "baseline": "AdamW",
            "speed_to_target": {"metric": "val_loss"},
            "figures": {"loss_curves": {"y": ["val_loss", "train_loss"], "x": ["step", "time_s"]}},
        },
        default_name="speed",
    )
    rows, cells = select_cells(collect([tmp_path / "runs"], log=None), spec)
    fig = loss_figure(spec, cells, rows, "val_loss", log=lambda _: None)
    target = sum(finals["adamw"]) / 2 + 0.02  # the fixture's last val loss is final + 0.02
    lines = dashed_lines(fig)
    assert len(lines) == 2  # one per x axis (step, wall-clock) of the one panel
    for line in lines:
        assert list(line.get_ydata()) == pytest.approx([target, target])
    assert f"({target:.4f}, dashed)" in fig.get_suptitle().replace("\n", " ")
    other = loss_figure(spec, cells, rows, "train_loss", log=lambda _: None)  # not the target's metric
    assert dashed_lines(other) == [] and "dashed" not in other.get_suptitle()


def test_figures_without_data_are_skipped_with_a_note(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / "runs", optimizer="adamw", lr=1e-3, seed=seed, final=3.0, curve=False)
    spec = {
        "title": "no curves",
        "rows": {"key": "optimizer", "items": ["adamw"]},
        "columns": [{"label": "loss", "metric": "metrics.final.val_loss"}],
        "values": {"higher_is_better": False},
        "figures": {"loss_curves": True, "lr_sensitivity": True, "alpha": True, "resources": True},
    }
    notes = []
    df = collect([tmp_path / "runs"], log=None)
    paths = make_figures(df, parse_spec(spec, default_name="bare"), tmp_path / "out", log=notes.append)
    assert_images(paths, ["bare_lr_sensitivity", "bare_resources"])
    assert len(notes) == 3 and all("skipped" in n for n in notes)
    assert any("train_loss" in n for n in notes) and any("mask_stats" in n for n in notes)
    notes.clear()
    assert make_figures(df.iloc[0:0], parse_spec(spec, default_name="bare"), tmp_path, log=notes.append) == []
    assert notes == ["figures: bare: no runs match the spec; skipped"]


def test_benchmark_figure(tmp_path):
    bench = tmp_path / "optim_step.json"
    bench.write_text(
        json.dumps(
            {
                "device": "cpu",
                "results": [
                    {
                        "name": "adamw",
                        "step_time_s": 0.01,
                        "ratio_vs_fused_adamw": 1.0,
                        "state_bytes_per_param": 8,
                    },
                    {"name": "alphaadam", "step_time_s": 0.013, "ratio_vs_fused_adamw": 1.3},
                    {"name": "adam_mini", "step_time_s": 0.011},  # partial entries are fine
                    {"note": "no name: ignored"},
                ],
            }
        )
    )
    assert_images(bench_figure(bench, tmp_path / "out"), ["bench_optim_step"])
    notes = []
    assert bench_figure(tmp_path / "missing.json", tmp_path, log=notes.append) == []
    assert "not found" in notes[0]
    bench.write_text("{oops")
    with pytest.raises(ReportError, match="optim_step.json: not valid JSON"):
        bench_figure(bench, tmp_path)


def test_metrics_log_reading(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "train_loss": 4.0}\n{"step": 5, "train_loss": "nan"}\n{"step": 10, "train_l')
    records = read_metrics(tmp_path)  # a torn last line (killed writer) is dropped
    assert [r["step"] for r in records] == [0, 5]
    assert curve(records, "train_loss")["step"].tolist() == [0.0]  # non-finite points are left out
    path.write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(MetricsFileError, match=f"{path}:2: not valid JSON"):
        read_metrics(tmp_path)
