"""Errors the report commands print as one line (naming the file at fault) instead of a traceback."""

from alphaadam.errors import UserError
from alphaadam.runs.result import ResultFileError  # noqa: F401 (raised by collect; defined with the schema)


class ReportError(UserError):
    """Base class: a bad input file (result, metrics log, spec, reference) or an unusable request."""


class MetricsFileError(ReportError):
    """A metrics.jsonl line that is not a JSON object."""


class SpecError(ReportError):
    """A report spec with unknown, missing or ill-typed keys."""


class ReferenceFileError(ReportError):
    """A published-numbers block that is missing or not shaped like a table."""
