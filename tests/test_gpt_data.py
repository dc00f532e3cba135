"""Token files: the embedded corpus, text files, a datasets-based preparation, and batches."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from alphaadam.data.embedded import embedded_documents, ensure_embedded
from alphaadam.data.prepare import PrepareError, prepare_dataset, prepare_openwebtext, prepare_text_files
from alphaadam.data.tokenizer import gpt2_encoding
from alphaadam.data.tokens import DataMissing, TokenData, TrainBatches, fixed_val_batches
from tests.pretrain_helpers import REPO


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    return ensure_embedded(tmp_path_factory.mktemp("data") / "embedded")


def test_embedded_corpus_is_lossless_gpt2_text_in_a_compact_vocabulary(embedded):
    meta = embedded.meta
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == len(meta["token_ids"]) < 6000
    train, val = np.asarray(embedded.split("train")), np.asarray(embedded.split("val"))
    assert len(train) > 100_000 and len(val) > 10_000
    assert max(train.max(), val.max()) < meta["vocab_size"]
    # Each document is split into a training head and a validation tail: mapping the first
    # document's head and tail back to GPT-2 ids gives back its text and end-of-text token.
    ids = np.asarray(meta["token_ids"])
    enc = gpt2_encoding()
    first = embedded_documents()[0]
    n = len(enc.encode_ordinary(first)) + 1
    cut = n - round(0.1 * n)
    restored = ids[np.concatenate([train[:cut], val[: n - cut]])].tolist()
    assert restored[-1] == enc.eot_token and enc.decode(restored[:-1]) == first


def test_embedded_corpus_is_built_once(embedded):
    stamp = os.stat(embedded.dir / "train.bin").st_mtime_ns
    again = ensure_embedded(embedded.dir)
    assert os.stat(again.dir / "train.bin").st_mtime_ns == stamp


def test_training_batches_are_a_function_of_seed_step_and_index(embedded):
    batches = TrainBatches(embedded, batch_size=4, block_size=16, seed=1)
    x, y = batches.get(step=3, index=1)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    torch.testing.assert_close(x[:, 1:], y[:, :-1])  # targets are the next tokens
    torch.testing.assert_close(batches.get(3, 1)[0], TrainBatches(embedded, 4, 16, seed=1).get(3, 1)[0])
    assert not torch.equal(x, batches.get(4, 1)[0])
    assert not torch.equal(x, batches.get(3, 0)[0])
    assert not torch.equal(x, TrainBatches(embedded, 4, 16, seed=2).get(3, 1)[0])


def test_validation_set_is_fixed_and_spans_the_split(embedded):
    a = fixed_val_batches(embedded, num_batches=3, batch_size=4, block_size=16)
    b = fixed_val_batches(embedded, num_batches=3, batch_size=4, block_size=16)
    assert len(a) == 3 and all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b, strict=True))
    val = torch.from_numpy(np.asarray(embedded.split("val")).astype(np.int64))
    torch.testing.assert_close(a[0][0][0], val[:16])
    torch.testing.assert_close(a[-1][1][-1], val[-16:])


def test_missing_data_names_the_command_that_prepares_it(tmp_path):
    with pytest.raises(DataMissing, match="python scripts/prepare_openwebtext.py --out x"):
        TokenData.open(tmp_path / "none", prepare_hint="python scripts/prepare_openwebtext.py --out x")


def test_text_files_prepare_and_rerun_safely(tmp_path):
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    files[0].write_text("The quick brown fox jumps over the lazy dog. " * 50)
    files[1].write_text("Pack my box with five dozen liquor jugs! " * 30)
    out = tmp_path / "tok"
    meta = prepare_text_files(files, out, val_fraction=0.2)
    data = TokenData.open(out)
    assert meta["vocab_size"] == 50257 and "token_ids" not in meta
    enc = gpt2_encoding()
    all_ids = [enc.encode_ordinary(f.read_text()) + [enc.eot_token] for f in files]
    assert data.num_tokens("train") + data.num_tokens("val") == sum(len(i) for i in all_ids)
    assert np.asarray(data.split("train"))[:10].tolist() == all_ids[0][:10]
    stamp = os.stat(out / "train.bin").st_mtime_ns
    prepare_text_files(files, out, val_fraction=0.2)  # same inputs: left alone
    assert os.stat(out / "train.bin").st_mtime_ns == stamp
    prepare_text_files(files, out, val_fraction=0.2, force=True)
    assert os.stat(out / "train.bin").st_mtime_ns != stamp
    with pytest.raises(PrepareError, match="no such text file"):
        prepare_text_files([tmp_path / "missing.txt"], out)


def test_prepare_text_script(tmp_path):
    (tmp_path / "a.txt").write_text("Some text to train on. " * 40)
    run = subprocess.run(
        [sys.executable, "scripts/prepare_text.py", str(tmp_path / "a.txt"), "--out", str(tmp_path / "t")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr
    assert "training and" in run.stdout and TokenData.open(tmp_path / "t").num_tokens("val") > 0


def test_dataset_preparation_with_several_processes(tmp_path):
    """The OpenWebText path (datasets.map with num_proc, sharded writes) on an in-memory dataset."""
    from datasets import Dataset, DatasetDict

    texts = [f"Document number {i} says hello to the world." for i in range(40)]
    dataset = DatasetDict(
        {"train": Dataset.from_dict({"text": texts[:30]}), "val": Dataset.from_dict({"text": texts[30:]})}
    )
    meta = prepare_dataset(
        dataset, tmp_path / "owt", {"source": "test"}, num_proc=2, shards=7, progress=False
    )
    enc = gpt2_encoding()
    expected = [i for t in texts[:30] for i in enc.encode_ordinary(t) + [enc.eot_token]]
    assert np.asarray(TokenData.open(tmp_path / "owt").split("train")).tolist() == expected
    assert meta["train_tokens"] == len(expected) and meta["vocab_size"] == 50257


def test_openwebtext_without_network_says_what_to_do(tmp_path):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Skylion007/openwebtext' on the Hub (OfflineModeIsEnabled)")

    with pytest.raises(PrepareError, match="network access") as err:
        prepare_openwebtext(tmp_path / "owt", load=offline)
    assert "Skylion007/openwebtext" in str(err.value) and not (tmp_path / "owt" / "meta.json").exists()


def test_openwebtext_falls_back_to_the_parquet_conversion(tmp_path):
    from datasets import Dataset

    calls = []

    def load(name, split, num_proc, revision):
        calls.append(revision)
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found openwebtext.py")
        return Dataset.from_dict({"text": [f"web page {i}" for i in range(50)]})

    meta = prepare_openwebtext(tmp_path / "owt", load=load, num_proc=1, val_size=0.1)
    assert calls == [None, "refs/convert/parquet"] and meta["revision"] == "refs/convert/parquet"
    assert meta["val_tokens"] > 0


def test_prepare_openwebtext_script_offline(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "scripts/prepare_openwebtext.py", "--out", str(tmp_path / "owt"), "--num-proc", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 1
    assert "network access" in run.stderr and "Traceback" not in run.stderr
