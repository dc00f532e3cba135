"""Shared set-up of the GLUE tests, all made in-process and offline: a tiny random RoBERTa with a
byte-level BPE tokenizer trained on the tests' own sentences, and GLUE-shaped local data for each
input kind (single sentence, sentence pair, regression, three classes with two validation splits),
written in the file formats the loader accepts."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from alphaadam.train.config import compose

GOOD = ["good", "great", "fine", "lovely", "superb", "nice"]
BAD = ["bad", "awful", "poor", "dull", "boring", "weak"]
NOUNS = ["film", "movie", "plot", "cast", "story", "scene", "show", "book"]
FILLER = ["the", "a", "this", "that", "really", "very", "quite", "was", "is", "so"]
MAX_LENGTH = 64  # the tiny model's positions (66) minus RoBERTa's padding offset (2)


def sentence(rng: random.Random, mood: list[str] | None = None) -> str:
    words = [rng.choice(FILLER), rng.choice(NOUNS), rng.choice(FILLER)]
    if mood is not None:
        words.append(rng.choice(mood))
    words += [rng.choice(FILLER) for _ in range(rng.randint(0, 4))]
    return " ".join(words)


def rows(kind: str, n: int, seed: int) -> list[dict]:
    """``n`` examples of a kind of task, each with a signal a small model can learn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        if kind == "single":  # SST-2 / CoLA shaped: the sentiment word decides
            out.append({"sentence": sentence(rng, GOOD if label else BAD), "label": label, "idx": i})
        elif kind == "pair":  # MRPC / RTE shaped: a paraphrase repeats the first sentence
            first = sentence(rng)
            second = " ".join(reversed(first.split())) if label else sentence(rng)
            out.append({"sentence1": first, "sentence2": second, "label": label, "idx": i})
        elif kind == "regression":  # STS-B shaped: 0..5 by the share of repeated words
            first = sentence(rng).split()
            keep = rng.randint(0, len(first))
            second = first[:keep] + [rng.choice(NOUNS) for _ in range(len(first) - keep)]
            score = round(5.0 * keep / len(first), 2)
            out.append(
                {"sentence1": " ".join(first), "sentence2": " ".join(second), "label": score, "idx": i}
            )
        elif kind == "nli":  # MNLI shaped: three classes
            label = i % 3
            premise = sentence(rng)
            hypothesis = [premise, sentence(rng, GOOD), sentence(rng, BAD)][label]
            out.append({"premise": premise, "hypothesis": hypothesis, "label": label, "idx": i})
    return out


# task config -> (kind, file format, splits)
TASKS = {
    "sst2": ("single", "jsonl", ("train", "validation")),
    "cola": ("single", "csv", ("train", "validation")),
    "mrpc": ("pair", "tsv", ("train", "validation")),
    "rte": ("pair", "save_to_disk", ("train", "validation")),
    "stsb": ("regression", "hub_parquet", ("train", "validation")),
    "mnli": ("nli", "parquet", ("train", "validation_matched", "validation_mismatched")),
}
TRAIN_ROWS, EVAL_ROWS = 48, 24


def write_glue(root: Path) -> Path:
    """GLUE-shaped data under ``root/<config>/`` for every task of TASKS, each in its own format."""
    for task, (kind, fmt, splits) in TASKS.items():
        directory = Path(root) / task
        directory.mkdir(parents=True, exist_ok=True)
        frames = {
            split: pd.DataFrame(rows(kind, TRAIN_ROWS if split == "train" else EVAL_ROWS, seed=k))
            for k, split in enumerate(splits)
        }
        if fmt == "save_to_disk":
            from datasets import Dataset, DatasetDict

            DatasetDict(
                {s: Dataset.from_pandas(f, preserve_index=False) for s, f in frames.items()}
            ).save_to_disk(str(directory))
            continue
        for split, frame in frames.items():
            if fmt == "jsonl":
                frame.to_json(directory / f"{split}.jsonl", orient="records", lines=True)
            elif fmt == "csv":
                frame.to_csv(directory / f"{split}.csv", index=False)
            elif fmt == "tsv":
                frame.to_csv(directory / f"{split}.tsv", sep="\t", index=False)
            elif fmt == "parquet":
                frame.to_parquet(directory / f"{split}.parquet", index=False)
            elif fmt == "hub_parquet":  # the layout of the nyu-mll/glue repository
                frame.to_parquet(directory / f"{split}-00000-of-00001.parquet", index=False)
    return Path(root)


def corpus() -> list[str]:
    texts = []
    for kind in ("single", "pair", "regression", "nli"):
        for row in rows(kind, 200, seed=99):
            texts += [v for k, v in row.items() if isinstance(v, str)]
    return texts


def write_tiny_roberta(directory: Path) -> Path:
    """A random 2-layer RoBERTa (width 32) with a byte-level BPE tokenizer trained on the tests'
    sentences, saved as ``save_pretrained`` does, so that ``model.path=<directory>`` loads both."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus(), trainer)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=MAX_LENGTH,
    )
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    directory = Path(directory)
    RobertaForMaskedLM(config).save_pretrained(directory)  # a pretrained encoder: no classifier head
    tokenizer.save_pretrained(directory)
    return directory


# Quick CPU settings for the tiny model: batches of 8 (6 steps per epoch of 48 examples), 2 epochs.
QUICK = (
    "model.name=tiny_roberta",
    f"data.max_length={MAX_LENGTH}",
    "task.batch_size=8",
    "trainer.epochs=2",
    "trainer.device=cpu",
    "trainer.eval_batch_size=16",
    "trainer.log_every=1",
    "trainer.progress=none",
    "trainer.mask_stats_every=0",
    "optimizer.lr=1e-3",
)


def quick_args(root: Path, model_dir: Path, data_dir: Path, *overrides: str) -> list[str]:
    """Command-line overrides of a quick CPU run under ``root`` (later overrides win)."""
    return [f"run.root={root}", f"model.path={model_dir}", f"data.path={data_dir}", *QUICK, *overrides]


def glue_config(root: Path, model_dir: Path, data_dir: Path, *overrides: str):
    return compose("finetune_glue", quick_args(root, model_dir, data_dir, *overrides))
