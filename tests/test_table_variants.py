"""Configurations never merge: runs that differ in any setting (not only in the hand-picked identity
fields) are different configurations of a table; seeds of one configuration still are averaged."""

import pytest
import torch
import yaml

import recipes.pretrain_gpt as recipe
from alphaadam.data.embedded import ensure_embedded
from alphaadam.report.collect import collect
from alphaadam.report.select import configurations, select_cell
from alphaadam.report.spec import parse_spec
from alphaadam.report.tables import build_table, to_markdown
from alphaadam.runs import variant_hash
from tests.pretrain_helpers import gpt_config

SPEC = """
title: Variants
runs: {recipe: pretrain_gpt}
rows: {key: optimizer, items: [{value: alphaadam, label: AlphaAdam}]}
columns: [{label: Final, metric: metrics.final.val_loss}]
values: {higher_is_better: false}
"""


@pytest.fixture(autouse=True)
def quick_settings(monkeypatch):
    monkeypatch.setenv("ALPHAADAM_BACKEND", "eager")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_runs_differing_only_in_compensation_are_different_configurations(tmp_path):
    data_dir = tmp_path / "embedded"
    ensure_embedded(data_dir)
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
    spec = parse_spec(yaml.safe_load(SPEC), default_name="variants")
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
