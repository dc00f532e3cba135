"""metrics.jsonl: one JSON object per logged step, appended as training goes.

Keys the report figures read: ``step``, ``time_s`` (wall-clock since start), ``train_loss``,
``val_loss`` (on eval steps) and, for masked optimizers, ``mask_stats``: a list of
``{"name", "alpha", "density"}`` per parameter tensor.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

from alphaadam.runs.files import write_text

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
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines[:-1]]
        with contextlib.suppress(json.JSONDecodeError):
            records.extend(json.loads(line) for line in lines[-1:])
        return records

    def truncate_after(self, step: int) -> None:
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
