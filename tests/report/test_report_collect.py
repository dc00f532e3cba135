import json

import pandas as pd
import pytest

from alphaadam.report.collect import collect, load_result, write_index
from alphaadam.report.errors import ResultFileError
from tests.report.report_fixtures import write_run


def test_collect_flattens_every_result(ablation):
    _, runs = ablation
    df = collect([runs], log=None)
    assert len(df) == 20
    for column in (
        "run_dir",
        "status",
        "identity.optimizer",
        "identity.lr",
        "identity.seed",
        "metrics.final.val_loss",
        "metrics.best.val_loss",
        "metrics.at_fraction.0.2.val_loss",
        "metrics.at_fraction.1.0.val_loss",
        "metrics.best_step",
        "timing.step_time_s",
        "memory.optimizer_state_bytes_per_param",
    ):
        assert column in df.columns, column
    assert df["status"].value_counts().to_dict() == {
        "completed": 10,
        "diverged": 5,
        "oom": 2,
        "failed": 2,
        "running": 1,
    }
    assert df["run_dir"].is_monotonic_increasing
    adamw = df[(df["identity.optimizer"] == "adamw") & (df["status"] == "completed")]
    assert sorted(adamw["identity.lr"]) == [1e-3, 1e-3, 1e-3, 3e-3, 3e-3]


def test_fraction_keys_are_normalised_and_nonfinite_strings_become_floats(tmp_path):
    run = write_run(tmp_path, optimizer="adamw", lr=1e-3, seed=0, final=3.0)
    result = json.loads((run / "result.json").read_text())
    result["metrics"]["at_fraction"] = {"1": {"val_loss": "nan"}, "0.50": {"val_loss": 3.5}}
    (run / "result.json").write_text(json.dumps(result))
    df = collect([tmp_path], log=None)
    assert "metrics.at_fraction.1.0.val_loss" in df.columns
    assert "metrics.at_fraction.0.5.val_loss" in df.columns
    assert pd.isna(df.loc[0, "metrics.at_fraction.1.0.val_loss"])
    assert df.loc[0, "metrics.at_fraction.0.5.val_loss"] == 3.5


def test_index_written_as_csv_and_parquet(tmp_path, ablation):
    _, runs = ablation
    write_run(runs, optimizer="galore", lr=1e-3, seed=0, final=3.0, extra_identity={"rank": "full"})
    write_run(runs, optimizer="galore", lr=1e-3, seed=1, final=3.0, extra_identity={"rank": 8})
    df = collect([runs], log=None)
    csv, parquet = write_index(df, tmp_path / "index")
    assert not list((tmp_path / "index").glob(".*.tmp"))
    back = pd.read_parquet(parquet)
    assert len(back) == len(df) == len(pd.read_csv(csv))
    assert set(back["identity.rank"].dropna()) == {"full", "8"}


def test_empty_or_missing_root_gives_an_empty_index(tmp_path):
    df = collect([tmp_path / "nowhere"], log=None)
    assert df.empty and "status" in df.columns
    csv, parquet = write_index(df, tmp_path / "index")
    assert pd.read_parquet(parquet).empty


def test_duplicate_run_ids_are_kept_once(tmp_path):
    a = write_run(tmp_path / "a", optimizer="adamw", lr=1e-3, seed=0, final=3.0)
    b = write_run(tmp_path / "b", optimizer="adamw", lr=1e-3, seed=0, final=2.0)
    result = json.loads((b / "result.json").read_text())
    result["updated_at"] = "2027-01-01T00:00:00+00:00"
    (b / "result.json").write_text(json.dumps(result))
    notes = []
    df = collect([tmp_path / "a", tmp_path / "b"], log=notes.append)
    assert len(df) == 1 and df.loc[0, "metrics.final.val_loss"] == 2.0
    assert a != b and "duplicate" in notes[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"status": "finished", "identity": {}}', "status 'finished'"),
        ('{"schema": 2, "status": "completed"}', "schema 2"),
        ('{"status": "completed", "identity": [1]}', "'identity' must be an object"),
    ],
)
def test_malformed_result_names_the_file(tmp_path, content, message):
    path = tmp_path / "exp" / "run-0123456789" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ResultFileError, match=message) as info:
        collect([tmp_path], log=None)
    assert str(path) in str(info.value)
    with pytest.raises(ResultFileError):
        load_result(path)
