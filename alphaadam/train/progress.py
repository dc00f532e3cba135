"""Progress output of the main process: a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def _fmt(record: dict) -> str:
    parts = []
    for key, fmt in (
        ("train_loss", "loss {:.4f}"),
        ("val_loss", "val {:.4f}"),
        ("lr", "lr {:.2e}"),
        ("grad_norm", "grad {:.3f}"),
        ("tokens_per_s", "{:,.0f} tok/s"),
    ):
        value = record.get(key)
        if isinstance(value, (int, float)):
            parts.append(fmt.format(value))
    return " | ".join(parts)


class Progress:
    def __init__(self, total: int, initial: int, mode: str = "auto", enabled: bool = True):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode if enabled else "none"
        self.enabled = enabled
        self.total = total
        self.bar = (
            tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            if self.mode == "bar"
            else None
        )

    def step(self, record: dict | None) -> None:
        """One step done; ``record`` is the step's metrics when it was a logging step."""
        if self.bar is not None:
            self.bar.update(1)
            if record:
                self.bar.set_postfix_str(_fmt(record), refresh=False)
        elif self.mode == "lines" and record:
            print(f"step {record['step']}/{self.total} | {_fmt(record)}", flush=True)

    def write(self, message: str) -> None:
        """A line that always shows on the main process (start, end, divergence), whatever the mode."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
