"""Print the ATen ops a step dispatches for 16, 148 (GPT-2) and 600 parameter tensors.

    python scripts/count_step_ops.py [--device cuda]

Masked optimizers run their multi-tensor path (backend="eager"); torch's foreach AdamW is the
yardstick, shown without and with its per-tensor host reads of the (CPU) step counters.
"""

from __future__ import annotations

import argparse

from alphaadam.optim.opcount import HOST_READ, ops_per_step

SIZES = (16, 148, 600)
MASKED = ("alphaadam", "cadamw", "adamw_am", "adamw_sm", "alphasgd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{'optimizer':<28}" + "".join(f"{n:>8}" for n in SIZES))
    for name in (*MASKED, "adamw_foreach"):
        hparams = dict(weight_decay=0.1)
        if name != "adamw_foreach":
            hparams["backend"] = "eager"
        if name == "alphasgd":
            hparams["momentum"] = 0.9
        counts = [ops_per_step(name, n, args.device, **hparams) for n in SIZES]
        print(f"{name:<28}" + "".join(f"{sum(c.values()) - c[HOST_READ]:>8}" for c in counts))
        if any(c[HOST_READ] for c in counts):
            print(f"{name + ' + host reads':<28}" + "".join(f"{sum(c.values()):>8}" for c in counts))


if __name__ == "__main__":
    main()
