"""The embedded demo corpus: CPython's own English documentation (``pydoc_data.topics``, the text
that ``help("topics")`` shows), so that a run needs no download.

It is tokenized with GPT-2's BPE into a compact vocabulary (the ~5k GPT-2 ids that occur), once per
data directory; the last tenth of every topic is the validation split.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

from filelock import FileLock

from alphaadam.data.prepare import already_prepared, encode_document, split_tail, write_documents
from alphaadam.data.tokens import TokenData

VAL_FRACTION = 0.1


def embedded_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def ensure_embedded(data_dir: Path | str) -> TokenData:
    """Prepare the corpus in ``data_dir`` unless already there (safe with concurrent runs)."""
    data_dir = Path(data_dir)
    docs = embedded_documents()
    digest = hashlib.sha256("\0".join(docs).encode()).hexdigest()[:16]
    settings = {
        "source": f"pydoc_data.topics (Python {platform.python_version()})",
        "source_sha256": digest,
        "val_fraction": VAL_FRACTION,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(data_dir / ".prepare.lock")):
        if not already_prepared(data_dir, settings):
            splits = split_tail([encode_document(d) for d in docs], VAL_FRACTION)
            write_documents(data_dir, splits, settings, compact_vocab=True)
    return TokenData.open(data_dir)
