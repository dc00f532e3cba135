import pytest
import yaml

from alphaadam.report.errors import SpecError
from alphaadam.report.reference import load_numbers
from alphaadam.report.spec import find_specs, load_spec, parse_spec

MINIMAL = {
    "title": "t",
    "rows": {"key": "optimizer", "items": ["adamw"]},
    "columns": [{"label": "loss", "metric": "metrics.final.val_loss"}],
    "values": {"higher_is_better": False},
}


def test_repository_specs_load(in_repo):
    specs = {s.name: s for s in find_specs(suite=None)}
    assert {"table1_glue", "table2_gsm8k", "table3_ablation", "figure2_gpt2", "demo"} <= set(specs)
    studies = {"demo", "memory_efficient", "table3_memory_efficient"}  # suites of their own
    assert {s.name for s in find_specs()} == set(specs) - studies
    assert specs["demo"].out_dir == "results/demo" and specs["demo"].reference is None
    glue = specs["table1_glue"]
    assert [c.metric.rsplit(".", 1)[1] for c in glue.columns] == [
        "f1",
        "pearson",
        "matthews",
        "accuracy",
        "accuracy",
        "accuracy",
        "accuracy",
    ]
    assert glue.averages[0].of == tuple(c.label for c in glue.columns)
    gsm = specs["table2_gsm8k"]
    assert [c.select_metric for c in gsm.columns] == ["metrics.final.accuracy"] * 2
    assert [c.select_higher_is_better for c in gsm.columns] == [True, True]
    assert [c.higher_is_better for c in gsm.columns] == [True, False]


def test_repository_specs_match_the_published_numbers(in_repo):
    """Every `paper` label of a spec names a number in results/reference/paper_numbers.yaml."""
    for spec in find_specs(suite=None):
        if spec.reference is None:
            continue
        numbers = load_numbers(spec.reference.file, spec.reference.source, spec.reference.transpose)
        labels = [c.paper for c in spec.columns] + [a.paper for a in spec.averages]
        for row in spec.rows:
            for label in labels:
                assert (row.paper, label) in numbers, (spec.name, row.paper, label)


def test_defaults():
    spec = parse_spec(MINIMAL, default_name="x")
    assert spec.name == "x" and spec.suite == "paper" and spec.out_dir == "results/paper"
    assert spec.runs.roots == ("results/runs",)
    (row,) = spec.rows
    assert row.label == "adamw" and row.where == {"optimizer": ("adamw",)}
    (col,) = spec.columns
    assert (col.scale, col.decimals, col.higher_is_better) == (1.0, 3, False)
    assert (col.select_metric, col.select_higher_is_better) == ("metrics.final.val_loss", False)
    assert spec.selection.over == "lr" and spec.selection.seed == "seed"
    assert spec.figures.loss_curves is None and not spec.figures.alpha


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colums": []}, r"unknown key\(s\) 'colums'"),
        ({"columns": [{"label": "a", "metirc": "m"}]}, r"columns\[0\]: unknown key\(s\) 'metirc'"),
        ({"columns": [{"label": "a"}]}, r"columns\[0\]: missing required key\(s\) 'metric'"),
        ({"title": None}, "missing required key"),
        ({"values": {}}, "higher_is_better is not set"),
        ({"averages": [{"label": "Avg", "of": ["nope"]}]}, "no column labelled 'nope'"),
        ({"averages": [{"label": "loss"}]}, "label 'loss' is used twice"),
        ({"selection": {"rule": "best_single"}}, "unknown rule 'best_single'"),
        ({"rows": {"items": [{"label": "x"}]}}, r"rows.items\[0\]: give `value` or `where`"),
        ({"rows": {"items": ["adamw"]}}, "`value` needs `rows.key`"),
        ({"figures": {"loss_curves": {"x": ["tokens"]}}}, "unknown"),
        ({"figures": {"alpha": {"bins": 3}}}, r"figures.alpha: unknown key\(s\) 'bins'"),
        ({"reference": {"file": "x.yaml"}}, "missing required key"),
        ({"table": "yes"}, "expected true or false"),
    ],
)
def test_bad_specs_name_the_file_and_key(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **change}))
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_unknown_spec_name_lists_the_available_ones(tmp_path):
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(SpecError, match="specs in .*: one"):
        load_spec("two", spec_dir=tmp_path)
