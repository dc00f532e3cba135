"""Hugging Face models for fine-tuning: a tokenizer and a sequence classifier from a hub id or a
local directory, with one clear error when neither the cache nor the hub can provide them.

``model.path`` is a hub id (``FacebookAI/roberta-base``, fetched at ``model.revision`` into the
Hugging Face cache on first use) or a local directory holding ``config.json``, the weights and the
tokenizer files (what ``save_pretrained`` writes for a model and its tokenizer). The classifier head
of a pretrained encoder is newly initialised from the seeded torch generator; regression tasks
(STS-B) get one output and a mean-squared-error loss (``problem_type="regression"``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from alphaadam.errors import UserError
from alphaadam.hub import cause, offline_flags

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# What save_pretrained writes for the tokenizer families we load: a fast tokenizer, BPE files,
# WordPiece or SentencePiece vocabularies. Without one, transformers 5 builds an empty tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


class ModelUnavailable(UserError, RuntimeError):
    """A model or tokenizer cannot be loaded; the message says how to make it available."""


def is_local(path: str) -> bool:
    """A filesystem path rather than a hub id: it exists, or it is spelt like a path."""
    return Path(path).expanduser().exists() or path.startswith(("/", "./", "../", "~"))


def _load(what: str, path: str, revision: str | None, load):
    """``load()``, with hub and file errors turned into a ModelUnavailable that names the fix."""
    local = Path(path).expanduser()
    if is_local(path) and not local.is_dir():
        raise ModelUnavailable(f"model.path={path} is not a directory (nor a Hugging Face hub id)")
    if is_local(path) and not (local / "config.json").is_file():
        raise ModelUnavailable(
            f"cannot load the {what} from {path}: it has no config.json. The directory needs what "
            "save_pretrained writes for the model and its tokenizer (config.json, the weights, "
            "tokenizer files)."
        )
    from safetensors import SafetensorError

    try:
        return load()
    # hub unreachable, offline and not cached, bad id, bad files, a truncated weights file
    except (OSError, ValueError, SafetensorError) as err:
        if is_local(path):
            if isinstance(err, SafetensorError):
                raise ModelUnavailable(
                    f"cannot load the {what} from {path}: its weights file is truncated or corrupt "
                    f"({cause(err)}); copy or download it again"
                ) from None
            raise ModelUnavailable(
                f"cannot load the {what} from {path}: {cause(err)}. The directory needs what "
                "save_pretrained writes for the model and its tokenizer (config.json, the weights, "
                "tokenizer files)."
            ) from None
        why = offline_flags(OFFLINE_VARIABLES) or " (HF_HUB_OFFLINE=1?)"
        raise ModelUnavailable(
            f"{path} (revision {revision or 'main'}) is not in the local cache and the hub is "
            f"unreachable{why}: run once with network access, or set model.path=/path/to/"
            f"{path.rsplit('/', 1)[-1]} (a directory from save_pretrained with the model and its "
            f"tokenizer). Cause, loading the {what}: {cause(err)}"
        ) from None


def load_tokenizer(path: str, revision: str | None = None):
    """The model's tokenizer, checked against the model's vocabulary: a tokenizer of another model,
    or none at all, would turn every text into unknown tokens and train to chance without an error."""
    from transformers import AutoTokenizer

    vocab_size = getattr(load_config(path, revision), "vocab_size", None)
    local = Path(path).expanduser()
    if is_local(path) and not any((local / f).is_file() for f in TOKENIZER_FILES):
        raise ModelUnavailable(
            f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): save the model's tokenizer "
            "there too (tokenizer.save_pretrained(DIR)) or copy its files from the hub repository"
        )
    tokenizer = _load(
        "tokenizer", path, revision, lambda: AutoTokenizer.from_pretrained(path, revision=revision)
    )
    # Models pad their embeddings (e.g. to a multiple of 64), so the tokenizer may be somewhat smaller.
    if vocab_size and not vocab_size / 2 <= len(tokenizer) <= vocab_size:
        raise ModelUnavailable(
            f"the tokenizer in {path} has {len(tokenizer)} tokens but the model's vocabulary has "
            f"{vocab_size}: the tokenizer files belong to another model or are incomplete"
        )
    return tokenizer


def load_config(path: str, revision: str | None = None):
    from transformers import AutoConfig

    return _load("model config", path, revision, lambda: AutoConfig.from_pretrained(path, revision=revision))


def load_classifier(
    path: str,
    *,
    num_labels: int,
    regression: bool = False,
    revision: str | None = None,
    dropout: float | None = None,
    classifier_dropout: float | None = None,
):
    """``AutoModelForSequenceClassification`` in float32 (the master weights under mixed precision).

    ``dropout`` sets the hidden and attention dropout, ``classifier_dropout`` the head's (None: the
    checkpoint's own values).
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    problem = "regression" if regression else "single_label_classification"
    options = {"num_labels": num_labels, "problem_type": problem, "dtype": torch.float32}
    if dropout is not None:
        options.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if classifier_dropout is not None:
        options["classifier_dropout"] = classifier_dropout
    # The load report (a table of the new classifier head and the unused MLM head) and the progress
    # bar are noise in a run's log; the recipe prints one line about the model instead.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return _load(
            "model",
            path,
            revision,
            lambda: AutoModelForSequenceClassification.from_pretrained(path, revision=revision, **options),
        )
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def check_available(path: str, revision: str | None = None) -> str:
    """Load the model config and the tokenizer (small files; fetched into the cache when the hub is
    reachable): a quick check, before a sweep starts, that every job will find the model."""
    load_tokenizer(path, revision)  # loads and checks the config too
    return getattr(load_config(path, revision), "model_type", "?")
