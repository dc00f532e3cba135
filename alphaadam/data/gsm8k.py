"""GSM8K for supervised fine-tuning: the rows, the prompt-response format and the label mask.

Three sources of rows, each a list of ``{"question", "answer"}`` dicts per split:

* the hub: ``openai/gsm8k``, configuration ``main`` (7,473 train / 1,319 test rows), at a pinned
  revision (``data.revision``, passed to ``datasets.load_dataset``);
* a local directory (``data.source=DIR``) with ``train.jsonl`` and ``test.jsonl`` (or ``.parquet``)
  files in the hub's columns;
* ``embedded``: the eight grade-school problems that lm-eval ships as its chain-of-thought few-shot
  exemplars (``lm_eval/tasks/gsm8k/gsm8k-cot.yaml``), rewritten into GSM8K's answer form
  (``... The answer is 6.`` becomes ``...\\n#### 6``). Real rows, no download: the same rows are the
  training and the test split, for runs and tests on a machine without the hub.

An example is the prompt (the question in ``data.template``, with the tokenizer's BOS) followed by
the response (the answer, then EOS). The loss is on the response and EOS only: the prompt's labels
are -100. Sequences longer than ``data.max_length`` lose their right end.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path

import torch
import yaml

from alphaadam.errors import ConfigError

HUB_ID = "openai/gsm8k"
TRAIN_ROWS = 7473  # the hub's train split, which the paper's 702 steps are computed from
IGNORE = -100  # the label of a token the loss skips (Hugging Face's convention)


def embedded_rows() -> list[dict]:
    """lm-eval's eight GSM8K chain-of-thought exemplars, in GSM8K's ``#### <number>`` answer form."""
    text = resources.files("lm_eval").joinpath("tasks/gsm8k/gsm8k-cot.yaml").read_text()
    samples = yaml.safe_load(text)["fewshot_config"]["samples"]
    rows = []
    for sample in samples:
        reasoning, number = re.fullmatch(r"(.*) The answer is (-?[\d.,]+)\.", sample["target"], re.S).groups()
        rows.append({"question": sample["question"], "answer": f"{reasoning}\n#### {number}"})
    return rows


def load_rows(source: str, hub_id: str = HUB_ID, config: str = "main", revision: str | None = None) -> dict:
    """``{"train": rows, "test": rows}`` from ``embedded``, a local directory, or the hub."""
    if source == "embedded":
        rows = embedded_rows()
        return {"train": rows, "test": rows}
    import datasets  # slow to import; not needed for the embedded rows

    if source != "hub":
        return {split: _local_split(Path(source), split, datasets) for split in ("train", "test")}
    loaded = datasets.load_dataset(hub_id, config, revision=revision)
    return {split: _rows(loaded[split]) for split in ("train", "test")}


def _local_split(directory: Path, split: str, datasets) -> list[dict]:
    for suffix, builder in ((".jsonl", "json"), (".parquet", "parquet")):
        file = directory / f"{split}{suffix}"
        if file.is_file():
            return _rows(datasets.load_dataset(builder, data_files=str(file), split="train"))
    raise ConfigError(
        f"data.source={directory} has no {split}.jsonl or {split}.parquet: put GSM8K's {split} split there "
        "(columns question, answer), or use data=hub to load openai/gsm8k from the hub"
    )


def _rows(dataset) -> list[dict]:
    missing = {"question", "answer"} - set(dataset.column_names)
    if missing:
        raise ConfigError(f"GSM8K rows need the columns question and answer; missing {sorted(missing)}")
    return [{"question": q, "answer": a} for q, a in zip(dataset["question"], dataset["answer"], strict=True)]


def encode(row: dict, tokenizer, template: str, max_length: int) -> dict:
    """One example's ``input_ids`` and ``labels``: the prompt (with the tokenizer's BOS) masked, the
    response and EOS as targets, the right end cut at ``max_length``."""
    prompt = tokenizer(template.format(question=row["question"]))["input_ids"]
    response = tokenizer(" " + row["answer"], add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    ids = (prompt + response)[:max_length]
    labels = ([IGNORE] * len(prompt) + response)[:max_length]
    return {"input_ids": ids, "labels": labels}


def collate(examples: list[dict], pad_id: int) -> dict:
    """Right-padded tensors; padding is masked from attention and loss."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """A last, smaller batch is kept (the anchor's ``drop_last: false``): 7,473 rows at 32 give 234."""
    return math.ceil(rows / batch_size)


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean token loss over its targets (the next-token shift included)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(labels.shape)
    targets = (labels != IGNORE).sum(1).clamp(min=1)
    return per_token.sum(1) / targets
