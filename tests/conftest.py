"""Test-wide settings (no network, no W&B account, deterministic and quick) and shared fixtures."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def glue_data(tmp_path_factory):
    """GLUE-shaped local data for every task kind (tests/glue_helpers.py), for data.path=."""
    from tests.glue_helpers import write_glue

    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory):
    """A random 2-layer RoBERTa and its in-process tokenizer, for model.path=."""
    from tests.glue_helpers import write_tiny_roberta

    return write_tiny_roberta(tmp_path_factory.mktemp("tiny_roberta"))
