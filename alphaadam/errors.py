"""Errors the ``alphaadam`` command prints as one line instead of a traceback."""


class UserError(Exception):
    """A request that cannot be carried out as given; the message says what to change."""
