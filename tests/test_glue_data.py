"""GLUE data and models offline: task definitions, local file formats, tokenization, batches, and
the loaders' clear errors when the hub is out of reach."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from alphaadam.data.glue import (
    Collator,
    DataUnavailable,
    GlueTask,
    TrainBatches,
    eval_batches,
    load_splits,
    micro_batches,
    tokenize,
)
from alphaadam.errors import ConfigError
from alphaadam.models.hf import ModelUnavailable, load_classifier, load_tokenizer
from alphaadam.train.config import compose, validate
from recipes.finetune_glue import SCHEMA
from tests.glue_helpers import EVAL_ROWS, MAX_LENGTH, TASKS, TRAIN_ROWS
from tests.pretrain_helpers import REPO


def task(name: str, **changes) -> GlueTask:
    node = validate(compose("finetune_glue", [f"task=glue/{name}"]), SCHEMA).task
    for key, value in changes.items():
        node[key] = value
    return GlueTask.from_config(node)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_local_format_loads(glue_data, name):
    """jsonl, csv, tsv, parquet, the hub repository's parquet layout, and save_to_disk."""
    t = task(name)
    splits = load_splits(t, path=str(glue_data))
    assert list(splits) == [t.train_split, *t.eval_splits]
    assert len(splits["train"]) == TRAIN_ROWS and all(len(splits[s]) == EVAL_ROWS for s in t.eval_splits)
    assert {*t.text_columns, t.label_column} <= set(splits["train"].column_names)
    limited = load_splits(t, path=str(glue_data), max_train_samples=5, max_eval_samples=3)
    assert len(limited["train"]) == 5 and len(limited[t.eval_splits[0]]) == 3


def test_task_files_define_the_glue_conventions():
    assert (task("mrpc").metrics, task("mrpc").main_metric) == (("accuracy", "f1"), "f1")
    stsb = task("stsb")
    assert (stsb.regression, stsb.num_labels, stsb.main_metric) == (True, 1, "pearson")
    assert task("cola").main_metric == "matthews" and task("cola").text_columns == ("sentence",)
    assert task("qqp").batch_size == 128 and all(task(n).batch_size == 32 for n in ("rte", "sst2", "qnli"))
    mnli = task("mnli")
    assert mnli.num_labels == 3 and [mnli.suffix(s) for s in mnli.eval_splits] == ["", "_mismatched"]


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(metrics=["accuracy", "bleu"]), "unknown bleu"),
        (dict(main_metric="f1"), "main_metric='f1' is not in task.metrics"),
        (dict(metrics=["pearson"], main_metric="pearson"), "cannot score a classification task"),
        (
            dict(regression=True, metrics=["pearson"], main_metric="pearson"),
            "must be 1 for a regression task",
        ),
        (dict(text_columns=["a", "b", "c"]), "one or two columns"),
    ],
)
def test_inconsistent_task_settings_are_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        task("rte", **changes)


def test_missing_local_files_name_what_is_expected(tmp_path, glue_data):
    with pytest.raises(DataUnavailable, match=r"no files for GLUE task 'qnli'; expected train\.\{parquet"):
        load_splits(task("qnli"), path=str(glue_data))
    with pytest.raises(DataUnavailable, match="no such directory"):
        load_splits(task("rte"), path=str(tmp_path / "nowhere"))
    (tmp_path / "sst2").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "sst2" / f"{split}.jsonl").write_text(json.dumps({"text": "hi", "label": 1}) + "\n")
    with pytest.raises(DataUnavailable, match="no column sentence"):
        load_splits(task("sst2"), path=str(tmp_path))


def test_tokenize_truncates_and_checks_labels(glue_data, tiny_roberta):
    tokenizer = load_tokenizer(str(tiny_roberta))
    t = task("mrpc")
    data = tokenize(load_splits(t, path=str(glue_data)), tokenizer, t, max_length=12)
    row = data["train"][0]
    assert set(row) == {"input_ids", "attention_mask", "labels"}
    assert len(row["input_ids"]) <= 12 and row["input_ids"][0] == tokenizer.bos_token_id
    assert row["input_ids"].count(tokenizer.sep_token_id) >= 2  # a pair: <s> A </s></s> B </s>
    stsb = task("stsb")
    regression = tokenize(load_splits(stsb, path=str(glue_data)), tokenizer, stsb, MAX_LENGTH)
    assert isinstance(regression["validation"][0]["labels"], float)
    with pytest.raises(DataUnavailable, match=r"the label 2 is outside 0\.\.1 \(task\.num_labels=2\)"):
        load_splits(task("mnli", num_labels=2), path=str(glue_data))
    with pytest.raises(ConfigError, match="data.max_length=512 exceeds the tokenizer's model_max_length=64"):
        tokenize(load_splits(t, path=str(glue_data)), tokenizer, t, max_length=512)


def test_collator_pads_each_batch_to_its_longest_row():
    collate = Collator(pad_token_id=1, pad_to_multiple_of=4)
    batch = collate(
        {"input_ids": [[0, 5, 2], [0, 6, 7, 8, 9, 2]], "attention_mask": [[1] * 3, [1] * 6], "labels": [1, 0]}
    )
    assert batch["input_ids"].tolist() == [[0, 5, 2, 1, 1, 1, 1, 1], [0, 6, 7, 8, 9, 2, 1, 1]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 6] and batch["labels"].dtype == torch.long
    regression = Collator(1, None, regression=True)(
        {"input_ids": [[0, 2]], "attention_mask": [[1, 1]], "labels": [3.5]}
    )
    assert regression["input_ids"].shape == (1, 2) and regression["labels"].dtype == torch.float32


def test_training_order_is_a_function_of_seed_and_step():
    batches = TrainBatches(n=10, batch_size=4, seed=3)
    assert batches.steps_per_epoch == 3  # 4 + 4 + 2: the last batch is smaller, none dropped
    epoch0 = [batches.indices(s) for s in range(3)]
    assert sorted(sum(epoch0, [])) == list(range(10)) and len(epoch0[-1]) == 2
    epoch1 = [batches.indices(s) for s in range(3, 6)]
    assert sorted(sum(epoch1, [])) == list(range(10)) and epoch1 != epoch0
    assert TrainBatches(10, 4, 3).indices(4) == epoch1[1]  # a fresh sampler (a resumed run) agrees
    assert TrainBatches(10, 4, 4).indices(0) != epoch0[0]
    assert micro_batches([5, 6, 7, 8, 9], 2) == [[5, 6], [7, 8], [9]]
    assert eval_batches([3, 9, 5, 9], 3) == [[1, 3, 2], [0]]  # longest first, ties by position


def test_classifier_loads_from_a_local_directory(tiny_roberta):
    torch.manual_seed(0)
    model = load_classifier(str(tiny_roberta), num_labels=3, dropout=0.0, classifier_dropout=0.0)
    assert model.config.num_labels == 3 and model.config.hidden_dropout_prob == 0.0
    assert next(model.parameters()).dtype == torch.float32
    regression = load_classifier(str(tiny_roberta), num_labels=1, regression=True)
    assert regression.config.problem_type == "regression"
    with pytest.raises(ModelUnavailable, match="is not a directory"):
        load_classifier(str(tiny_roberta / "missing"), num_labels=2)
    with pytest.raises(ModelUnavailable, match="cannot load the model config from"):
        load_tokenizer(str(tiny_roberta.parent))  # a directory without model files


def test_a_model_directory_without_its_tokenizer_is_refused(tiny_roberta, tmp_path):
    """transformers would build an empty tokenizer, and the run would train on <unk> to chance."""
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    for f in tiny_roberta.iterdir():
        if f.name in ("config.json", "model.safetensors"):
            (weights_only / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelUnavailable, match="has no tokenizer files .*tokenizer.save_pretrained"):
        load_tokenizer(str(weights_only))
    config = json.loads((tiny_roberta / "config.json").read_text())
    other = tmp_path / "other_vocab"
    other.mkdir()
    for f in tiny_roberta.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "config.json").write_text(json.dumps({**config, "vocab_size": 50265}))
    with pytest.raises(ModelUnavailable, match=r"has \d+ tokens but the model's vocabulary has 50265"):
        load_tokenizer(str(other))


RTE_HEADER = {"sentence1": "a", "sentence2": "b", "idx": 0}


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "train.jsonl",
            [{**RTE_HEADER, "label": 0}, {**RTE_HEADER, "label": 0.5}],
            r"line 2: the label 0\.5 is not a class index",
        ),
        ("train.jsonl", [{**RTE_HEADER, "label": 1, "sentence1": None}], r"line 1: sentence1 is empty"),
        ("train.jsonl", [{**RTE_HEADER, "label": "yes"}], r"line 1: the label 'yes' is not a number"),
        (
            "train.jsonl",
            '{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "a",\n',
            r"line 2: not a JSON object",
        ),
        ("train.csv", "sentence1,sentence2,label\na,b,1\nc,d,\n", r"train\.csv, line 3: the label is empty"),
        (
            "train.csv",
            b"sentence1,sentence2,label\na,b,1\nc\xff,d,0\n",
            r"train\.csv, line 3: not UTF-8 text",
        ),
    ],
)
def test_bad_local_rows_are_refused_with_file_and_line(tmp_path, name, content, message):
    directory = tmp_path / "rte"
    directory.mkdir()
    good = [{**RTE_HEADER, "label": 1}]
    (directory / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    path = directory / name
    if isinstance(content, list):
        path.write_text("".join(json.dumps(r) + "\n" for r in content))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DataUnavailable, match=message):
        load_splits(task("rte"), path=str(tmp_path))


def test_a_nan_regression_target_is_a_data_error_not_a_divergence(tmp_path):
    directory = tmp_path / "stsb"
    directory.mkdir()
    row = {"sentence1": "a", "sentence2": "b", "idx": 0}
    (directory / "train.jsonl").write_text(
        json.dumps({**row, "label": 2.5}) + "\n" + json.dumps({**row, "label": float("nan")}) + "\n"
    )
    (directory / "validation.jsonl").write_text(json.dumps({**row, "label": 1.0}) + "\n")
    with pytest.raises(
        DataUnavailable, match=r"train\.jsonl, line 2: the label is nan; label must be a number"
    ):
        load_splits(task("stsb"), path=str(tmp_path))


OFFLINE_SCRIPT = textwrap.dedent(
    """
    from alphaadam.data.glue import DataUnavailable, GlueTask, load_splits
    from alphaadam.models.hf import ModelUnavailable, load_classifier, load_tokenizer
    from alphaadam.train.config import compose, validate
    from recipes.finetune_glue import SCHEMA

    cfg = validate(compose("finetune_glue", ["task=glue/rte"]), SCHEMA)
    try:
        load_splits(GlueTask.from_config(cfg.task), hub_id=cfg.data.hub_id, revision=cfg.data.revision)
    except DataUnavailable as err:
        print("DATA:", err)
    for load in (load_tokenizer, lambda p, r: load_classifier(p, num_labels=2, revision=r)):
        try:
            load(cfg.model.path, cfg.model.revision)
        except ModelUnavailable as err:
            print("MODEL:", err)
    """
)


def test_hub_out_of_reach_gives_the_fix(tmp_path):
    """An empty Hugging Face cache with the hub switched off: the real loaders, and what they say."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    run = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], cwd=REPO, capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    data = next(line for line in lines if line.startswith("DATA:"))
    assert "nyu-mll/glue (configuration 'rte', revision bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c)" in data
    assert "hub is unreachable (HF_DATASETS_OFFLINE=1 and HF_HUB_OFFLINE=1 are set)" in data
    assert "set data.path=DIR" in data
    models = [line for line in lines if line.startswith("MODEL:")]
    assert len(models) == 2
    for line in models:
        assert (
            "FacebookAI/roberta-base (revision e2da8e2f811d1448a5b465c236feacd80ffbac7b) is not in the local"
            in line
        )
        assert "hub is unreachable (HF_HUB_OFFLINE=1 is set): run once with network access" in line
        assert "set model.path=/path/to/roberta-base" in line


def test_a_truncated_weights_file_is_named(tiny_roberta, tmp_path):
    copy = tmp_path / "truncated"
    copy.mkdir()
    for f in tiny_roberta.iterdir():
        data = f.read_bytes()
        (copy / f.name).write_bytes(data[: len(data) // 2] if f.name == "model.safetensors" else data)
    with pytest.raises(ModelUnavailable, match="its weights file is truncated or corrupt"):
        load_classifier(str(copy), num_labels=2)
