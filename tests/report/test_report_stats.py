"""Intervals, paired tests against a baseline row, and speed to target (alphaadam/report/stats.py)."""

import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from alphaadam.report.collect import collect
from alphaadam.report.errors import SpecError
from alphaadam.report.spec import parse_spec
from alphaadam.report.stats import crossing, interval, paired, smallest_sign_flip_p, speed_to_target
from alphaadam.report.tables import MARKER, build_table, cells_frame, to_markdown
from tests.report.report_fixtures import write_run


def test_intervals():
    # t(0.975, 2) = 4.302653, sem([1, 2, 3]) = 1 / sqrt(3)
    assert interval([1.0, 2.0, 3.0], "ci95") == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert interval([1.0, 2.0, 3.0], "std") == pytest.approx(1.0)
    assert interval([1.0], "ci95") is None and interval([1.0, 2.0], "none") is None


def test_paired_tests_against_scipy_and_the_exact_enumeration():
    base = {s: 3.0 + 0.1 * s for s in range(8)}
    better = {s: v - 0.05 - 0.01 * (s % 3) for s, v in base.items()}
    t = paired(better, base, "t")
    assert (t.n, t.test) == (8, "t") and t.diff == pytest.approx(
        -0.05 - np.mean([s % 3 for s in range(8)]) / 100
    )
    assert t.p == pytest.approx(scipy_stats.ttest_rel(list(better.values()), list(base.values())).pvalue)
    six = {s: base[s] - (s + 1) for s in range(6)}  # six differences, all negative
    flip = paired(six, base, "auto")
    assert flip.test == "t" and paired({s: six[s] for s in range(5)}, base).test == "sign_flip"
    exact = paired(six, base, "sign_flip")
    assert exact.p == pytest.approx(2 / 2**6)  # only "all negative" and "all positive" are as extreme
    assert smallest_sign_flip_p(3) == pytest.approx(0.25)
    same = paired(dict(base), base, "t")
    assert same.diff == 0 and same.p == 1.0 and not same.significant(0.05)
    assert paired({0: 1.0}, {1: 2.0}) is None  # no seed in common
    assert paired({0: 1.0}, {0: 2.0}).p is None


def test_crossing_points_are_interpolated():
    curve = [
        {"step": s, "tokens": 1000 * s, "time_s": 0.5 * s, "val_loss": 4.0 - 0.02 * s}
        for s in range(0, 101, 10)
    ]
    hit = crossing(curve, 3.0)  # 4 - 0.02 s = 3 at s = 50, a logged point
    assert hit == {"step": 50.0, "tokens": 50000.0, "time_s": 25.0}
    hit = crossing(curve, 2.95)  # between the points at 50 (3.0) and 60 (2.8): a quarter of the way
    assert hit["step"] == pytest.approx(52.5) and hit["tokens"] == pytest.approx(52500)
    assert crossing(curve, 1.0) is None
    slower = [{**p, "val_loss": 4.0 - 0.01 * p["step"]} for p in curve]
    assert speed_to_target([curve, slower], 3.0)["step"] == pytest.approx(
        100 * 1 / 1.5
    )  # mean curve: 4 - 0.015 s
    assert speed_to_target([slower], 2.0) is None


SPEC = """
title: Paired fixture
runs: {recipe: pretrain_gpt, experiment: fixture}
rows:
  key: optimizer
  items: [{value: adamw, label: AdamW}, {value: twin, label: Twin}, {value: alphaadam, label: Better}]
columns: [{label: Final, metric: metrics.final.val_loss}]
values: {decimals: 3, higher_is_better: false, interval: ci95}
selection: {metric: metrics.final.val_loss}
baseline: {row: AdamW, test: t}
speed_to_target: true
"""


@pytest.fixture
def paired_runs(tmp_path):
    for seed in range(6):
        noise = [0.03, -0.02, 0.01, 0.04, -0.03, 0.0][seed]
        write_run(tmp_path, optimizer="adamw", lr=1e-3, seed=seed, final=3.2 + noise)
        write_run(tmp_path, optimizer="twin", lr=1e-3, seed=seed, final=3.2 + noise)  # the same numbers
        write_run(tmp_path, optimizer="alphaadam", lr=1e-3, seed=seed, final=3.0 + noise + 0.005 * seed)
    return collect([tmp_path], log=None)


def test_baseline_markers_intervals_and_speed_columns(paired_runs):
    table = build_table(paired_runs, parse_spec(yaml.safe_load(SPEC), default_name="paired"))
    text = to_markdown(table)
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert MARKER not in lines["| AdamW"] and MARKER not in lines["| Twin"]  # no row beats itself
    assert "Δ +0.000, p=1" in lines["| Twin"]
    assert MARKER in lines["| Better"] and "(n=6; Δ -0.188, p=" in lines["| Better"]
    better = table.comparisons[("Better", "Final")]
    diffs = [0.005 * s - 0.2 for s in range(6)]
    assert better.p == pytest.approx(scipy_stats.ttest_1samp(diffs, 0).pvalue) and better.p < 0.05
    spread = table.cells[("AdamW", "Final")].per_seed.values()
    assert f"± {interval(list(spread), 'ci95'):.3f}" in lines["| AdamW"]
    # speed: the fixture's val loss is final + 0.02 + 2 (1 - step / 50), logged every 10 steps
    assert "| 50 (1.00×) | — | 12.5 (1.00×) |" in lines["| AdamW"]  # tokens are not logged by the fixture
    assert table.speeds["Better"]["step"] < table.speeds["AdamW"]["step"]
    caption = text.splitlines()[-1]
    for words in (
        "95 % confidence interval (Student t",
        "the paired t-test",
        "selection bias",
        "†: p < 0.05",
    ):
        assert words in caption
    frame = cells_frame(table)
    row = frame[frame["row"] == "Better"].iloc[0]
    assert row["test"] == "t" and row["pairs"] == 6 and row["p"] == pytest.approx(better.p)


def test_a_row_that_never_reaches_the_target_says_so(tmp_path):
    for seed in range(2):
        write_run(tmp_path, optimizer="adamw", lr=1e-3, seed=seed, final=3.0)
        write_run(tmp_path, optimizer="alphaadam", lr=1e-3, seed=seed, final=3.5)
    spec = yaml.safe_load(SPEC)
    spec["rows"]["items"] = [{"value": "adamw", "label": "AdamW"}, {"value": "alphaadam", "label": "Slow"}]
    table = build_table(collect([tmp_path], log=None), parse_spec(spec, default_name="slow"))
    assert "| not reached | not reached | not reached |" in to_markdown(table)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"values": {"interval": "ci90", "higher_is_better": False}},
            "values.interval: 'ci90' is not one of",
        ),
        ({"baseline": {"row": "SGD"}}, "baseline.row: no row labelled 'SGD'"),
        ({"baseline": {"row": "AdamW", "test": "wilcoxon"}}, "baseline.test: 'wilcoxon' is not one of"),
        ({"baseline": None}, "speed_to_target: needs a `baseline` row"),
        ({"speed_to_target": {"x": ["epoch"]}}, "speed_to_target.x: unknown"),
        ({"baseline": {"row": "AdamW", "split": "yes"}}, "baseline.split: expected true or false, got 'yes'"),
    ],
)
def test_bad_statistics_options_are_spec_errors(change, message):
    spec = {**yaml.safe_load(SPEC), **change}
    with pytest.raises(SpecError, match=message):
        parse_spec(json.loads(json.dumps(spec)), default_name="bad")


# Per seed 0-3: on seeds 0 and 1 lr 1e-3 is the better of the two for both rows, on all four seeds
# lr 3e-3 is (seeds 2 and 3 favour it), so a split must test lr 1e-3 on seeds 2 and 3 only.
SPLIT_FINALS = {
    ("adamw", 1e-3): (3.20, 3.20, 3.30, 3.31),
    ("adamw", 3e-3): (3.25, 3.25, 3.15, 3.15),
    ("alphaadam", 1e-3): (3.00, 3.01, 3.10, 3.12),
    ("alphaadam", 3e-3): (3.05, 3.05, 2.80, 2.80),
}


def split_table(root, seeds: int):
    for (optimizer, lr), finals in SPLIT_FINALS.items():
        for seed in range(seeds):
            write_run(root, optimizer=optimizer, lr=lr, seed=seed, final=finals[seed], curve=False)
    spec = yaml.safe_load(SPEC)
    spec["rows"]["items"] = [{"value": "adamw", "label": "AdamW"}, {"value": "alphaadam", "label": "Better"}]
    spec["baseline"] = {"row": "AdamW", "test": "sign_flip", "split": True}
    del spec["speed_to_target"]
    return build_table(collect([root], log=None), parse_spec(spec, default_name="split"))


def test_held_out_split_tests_the_lr_chosen_on_the_other_seeds(tmp_path):
    table = split_table(tmp_path, seeds=4)
    assert table.split == ((0, 1), (2, 3))
    shown = table.cells[("Better", "Final")]
    assert shown.over == pytest.approx(3e-3) and shown.n == 4  # the cell itself: every seed
    held, base = table.held_out[("Better", "Final")], table.held_out[("AdamW", "Final")]
    assert held.over == pytest.approx(1e-3) and base.over == pytest.approx(1e-3)
    assert held.per_seed == pytest.approx({2: 3.10, 3: 3.12}) and set(base.per_seed) == {2, 3}
    better = table.comparisons[("Better", "Final")]
    assert better.n == 2 and better.diff == pytest.approx(((3.10 - 3.30) + (3.12 - 3.31)) / 2)
    assert better.p == pytest.approx(0.5)  # two pairs, exact sign flip
    text = to_markdown(table)
    assert "Δ -0.195, p=0.5" in text
    caption = text.splitlines()[-1]
    assert "selected on seeds 0, 1 and Δ and p use only the runs of seeds 2, 3" in caption
    assert "selection bias" not in caption
    row = cells_frame(table).set_index("row").loc["Better"]
    assert row["held_out_lr"] == pytest.approx(1e-3) and row["held_out_n"] == 2 and row["pairs"] == 2


def test_held_out_split_falls_back_below_four_seeds(tmp_path):
    table = split_table(tmp_path, seeds=3)
    assert table.split is None and table.held_out == {}
    better = table.comparisons[("Better", "Final")]  # lr 3e-3 for both rows, on the same 3 seeds
    assert better.n == 3 and better.diff == pytest.approx((-0.20 - 0.20 - 0.35) / 3)
    caption = to_markdown(table).splitlines()[-1]
    assert "selection bias" in caption
    assert "The held-out split asked for needs at least 4 seeds (3 found), so it was not made." in caption
    assert "held_out_lr" not in cells_frame(table).columns
