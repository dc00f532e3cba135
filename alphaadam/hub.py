"""The wording of Hugging Face hub failures, shared by the model and dataset loaders."""

from __future__ import annotations

import os


def cause(err: BaseException) -> str:
    """The error's type and first line: enough to tell a network failure from a bad id."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def offline_flags(variables: tuple[str, ...]) -> str:
    """`` (X=1 is set)`` for those of ``variables`` set in the environment, else ``""``."""
    offline = [f"{v}=1" for v in variables if os.environ.get(v, "") not in ("", "0")]
    verb = "is" if len(offline) == 1 else "are"
    return f" ({' and '.join(offline)} {verb} set)" if offline else ""
