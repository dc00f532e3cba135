"""GSM8K rows, the prompt-response format and its label mask, the step count, the loss normalisation."""

import pytest
import torch

from alphaadam.data.gsm8k import (
    IGNORE,
    TRAIN_ROWS,
    collate,
    embedded_rows,
    encode,
    load_rows,
    sequence_losses,
    steps_per_epoch,
)
from alphaadam.errors import ConfigError
from alphaadam.models.tiny_llama import build

TEMPLATE = "Question: {question}\nAnswer:"


@pytest.fixture(scope="module")
def tiny():
    rows = embedded_rows()
    return build([r["question"] + " " + r["answer"] for r in rows] * 5, 300, 32, 1, 2, 1, 64, seed=0), rows


def test_embedded_rows_are_lm_evals_exemplars_in_gsm8k_form():
    rows = embedded_rows()
    assert len(rows) == 8
    assert rows[0]["question"].startswith("There are 15 trees in the grove.")
    assert rows[0]["answer"].endswith("So there must have been 21 - 15 = 6.\n#### 6")
    assert all(r["answer"].rsplit("#### ", 1)[1].isdigit() for r in rows)
    assert load_rows("embedded") == {"train": rows, "test": rows}


def test_local_directory_without_files_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"no train.jsonl or train.parquet"):
        load_rows(str(tmp_path))


def test_hub_rows_are_read_at_the_pinned_revision(monkeypatch):
    import datasets

    from alphaadam.train.config import compose

    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        rows = datasets.Dataset.from_dict({"question": ["1+1?"], "answer": ["2\n#### 2"]})
        return {"train": rows, "test": rows}

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)  # offline: the call, not the hub
    data = compose("finetune_gsm8k").data
    assert data.source == "hub" and len(data.revision) == 40
    load_rows(data.source, data.hub_id, data.config, data.revision)
    assert calls == [(("openai/gsm8k", "main"), {"revision": data.revision})]


def test_local_jsonl_rows(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n')
    assert load_rows(str(tmp_path))["test"] == [{"question": "1+1?", "answer": "2\n#### 2"}]


def test_loss_is_on_the_answer_and_eos_only(tiny):
    (_, tok), rows = tiny
    example = encode(rows[1], tok, TEMPLATE, max_length=512)
    prompt = tok(TEMPLATE.format(question=rows[1]["question"]))["input_ids"]
    assert example["input_ids"][0] == tok.bos_token_id and example["input_ids"][-1] == tok.eos_token_id
    assert example["labels"][: len(prompt)] == [IGNORE] * len(prompt)
    targets = example["labels"][len(prompt) :]
    assert targets == example["input_ids"][len(prompt) :] and IGNORE not in targets
    assert tok.decode(targets[:-1]).strip() == rows[1]["answer"]


def test_truncation_cuts_the_right_end(tiny):
    (_, tok), rows = tiny
    full, cut = encode(rows[0], tok, TEMPLATE, 512), encode(rows[0], tok, TEMPLATE, 20)
    assert cut["input_ids"] == full["input_ids"][:20] and cut["labels"] == full["labels"][:20]


def test_collate_masks_padding(tiny):
    (_, tok), rows = tiny
    examples = [encode(r, tok, TEMPLATE, 512) for r in rows[:2]]
    batch = collate(examples, tok.pad_token_id)
    short = min(range(2), key=lambda i: len(examples[i]["input_ids"]))
    n = len(examples[short]["input_ids"])
    assert batch["attention_mask"][short, n:].sum() == 0 and (batch["labels"][short, n:] == IGNORE).all()
    assert batch["attention_mask"][short, :n].all()


def test_702_steps_from_the_train_split():
    assert 3 * steps_per_epoch(TRAIN_ROWS, 32) == 702


def test_sequence_loss_is_each_sequences_token_mean(tiny):
    (model, tok), rows = tiny
    examples = [encode(r, tok, TEMPLATE, 512) for r in rows[:3]]
    together = sequence_losses(
        model(**{k: v for k, v in collate(examples, tok.pad_token_id).items() if k != "labels"}).logits,
        collate(examples, tok.pad_token_id)["labels"],
    )
    for i, e in enumerate(examples):
        alone = collate([e], tok.pad_token_id)
        expected = model(input_ids=alone["input_ids"], labels=alone["labels"]).loss  # HF's token mean
        torch.testing.assert_close(together[i], expected, rtol=1e-5, atol=1e-5)


def test_scoring_alone_defaults_to_the_recipes_pin():
    from alphaadam.evals.gsm8k import pinned_revision
    from alphaadam.train.config import compose

    assert pinned_revision() == compose("finetune_gsm8k").data.revision
