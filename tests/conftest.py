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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The embedded corpus as token files, for the GPT recipe's data.dir=."""
    from alphaadam.data.embedded import ensure_embedded

    path = tmp_path_factory.mktemp("data") / "embedded"
    ensure_embedded(path)
    return path


@pytest.fixture
def quick_recipe_runs(monkeypatch):
    """Recipe runs of a few steps: no kernel compilation, and one thread (faster for models this
    small, much faster on a busy machine, and the same in child processes for bitwise equality)."""
    import torch

    monkeypatch.setenv("ALPHAADAM_BACKEND", "eager")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
