"""metrics.jsonl: one JSON object per logged step, appended as training goes.

Keys the report figures read: ``step``, ``time_s`` (wall-clock since start), ``train_loss``,
``val_loss`` (on eval steps) and, for masked optimizers, ``mask_stats``: a list of
``{"name", "alpha", "density"}`` per parameter tensor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from alphaadam.runs.files import UnreadableRunFile, write_text

METRICS_FILE = "metrics.jsonl"


def _clean(value):
    # JSON has no NaN/inf; a diverged run's last loss must still be readable.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Append-only log; ``truncate_after(step)`` drops lines past a checkpoint when a run resumes, so
    the resumed file equals the one an uninterrupted run writes."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def read(self) -> list[dict]:
        """The records; a last line cut short (a writer killed mid-line) is left out."""
        if not self.path.exists():
            return []
        try:
            lines = self.path.read_text().splitlines()
        except UnicodeDecodeError as err:
            raise self._unreadable(f"not UTF-8 text ({err.reason})") from None
        numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
        records = []
        for n, line in numbered:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if n == numbered[-1][0]:
                    break  # cut short by a kill mid-line: the one line a crash can leave half written
                raise self._unreadable(f"line {n} is not JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise self._unreadable(f"line {n} is not a metrics line (an object with a step)")
            records.append(record)
        return records

    def _unreadable(self, why: str) -> UnreadableRunFile:
        return UnreadableRunFile(f"{self.path}: {why}; restore it, or delete it to start the run over")

    def truncate_after(self, step: int) -> None:
        """Keep the lines up to ``step`` (all after it, and everything for ``step`` < 0, go)."""
        kept = [r for r in self.read() if r["step"] <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
