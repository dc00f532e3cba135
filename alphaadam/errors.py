"""Stop-errors: problems a user fixes (a config, a device, missing data or model files), printed as
one line naming the problem and the fix instead of a traceback.

Every such error derives from :class:`UserError`, so a command line catches them all with one
``except UserError`` (``alphaadam.train.session.run_main`` for the recipes, ``alphaadam.cli`` for the
``alphaadam`` command, preflight) and prints :func:`error_line`. This module imports nothing of the
package, so that any module may raise these errors without importing upwards.
"""


class UserError(Exception):
    """A request that cannot be carried out as given; the message says what to change."""


class ConfigError(UserError, ValueError):
    """A configuration value is missing, misspelt, of the wrong type or out of range."""


def error_line(err: BaseException, prefix: str | None = None) -> str:
    """``err`` as one line, after ``prefix: `` when given: how a stop-error is printed, and how any
    error is recorded in result.json. A stop-error's message is ours and written to be read whole
    (its lines are joined); another error gives its type's name and its message's first line (with
    the config key at fault when OmegaConf names one), since the message alone may not say what
    went wrong (``KeyError: 'x'``)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if isinstance(err, UserError):
        text = " ".join(lines) or type(err).__name__
    else:
        text = lines[0] if lines else ""
        key = getattr(err, "full_key", None)
        if key and key not in text:
            text = f"{key}: {text}"
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return f"{prefix}: {text}" if prefix else text
