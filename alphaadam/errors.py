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
    """``err`` as one line: its message's first line (or its type's name when it has no message),
    after ``prefix: `` when given. Errors that are not stop-errors keep their type's name in front,
    since the message alone may not say what went wrong (``KeyError: 'x'``)."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    if lines and not isinstance(err, UserError):
        text = f"{type(err).__name__}: {text}"
    return f"{prefix}: {text}" if prefix else text
