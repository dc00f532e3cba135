"""Optimizer step time and state memory on GPT-2-small-shaped parameters.

Each optimizer is timed interleaved with torch's fused AdamW (the fastest AdamW torch offers), in
the same process and on the same gradients, so the printed ratio is robust to a noisy machine:

    python scripts/bench_optim.py                       # 124M parameters, CPU
    python scripts/bench_optim.py --scale 0.25 --steps 10
    python scripts/bench_optim.py --device cuda

Writes results/bench/optim_step.json.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from alphaadam.optim import build_optimizer
from alphaadam.runs import write_json

DEFAULT_OPTIMIZERS = ["alphaadam", "cadamw", "adamw_foreach"]


def gpt2_small_shapes(scale: float = 1.0) -> list[tuple[str, tuple[int, ...]]]:
    """nanoGPT's GPT-2 124M parameter names and shapes; ``scale`` shrinks width and vocabulary."""
    d, vocab, block = round(768 * scale), round(50304 * scale), 1024
    shapes = [("transformer.wte.weight", (vocab, d)), ("transformer.wpe.weight", (block, d))]
    for i in range(12):
        prefix = f"transformer.h.{i}."
        shapes += [
            (prefix + "ln_1.weight", (d,)),
            (prefix + "ln_1.bias", (d,)),
            (prefix + "attn.c_attn.weight", (3 * d, d)),
            (prefix + "attn.c_attn.bias", (3 * d,)),
            (prefix + "attn.c_proj.weight", (d, d)),
            (prefix + "attn.c_proj.bias", (d,)),
            (prefix + "ln_2.weight", (d,)),
            (prefix + "ln_2.bias", (d,)),
            (prefix + "mlp.c_fc.weight", (4 * d, d)),
            (prefix + "mlp.c_fc.bias", (4 * d,)),
            (prefix + "mlp.c_proj.weight", (d, 4 * d)),
            (prefix + "mlp.c_proj.bias", (d,)),
        ]
    return shapes + [("transformer.ln_f.weight", (d,)), ("transformer.ln_f.bias", (d,))]


def make_parameters(shapes, device, seed=0) -> list[tuple[str, torch.nn.Parameter]]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [(n, torch.nn.Parameter((0.02 * torch.randn(s, generator=gen)).to(device))) for n, s in shapes]


def make_gradients(named, seed=1) -> list[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [(1e-3 * torch.randn(p.shape, generator=gen)).to(p.device) for _, p in named]


def build(name: str, named, lr: float) -> torch.optim.Optimizer:
    if name == "adamw_fused":
        return build_optimizer(named, "adamw", lr=lr, weight_decay=0.1, fused=True)
    if name == "adamw_foreach":
        return torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=0.1, foreach=True)
    return build_optimizer(named, name, lr=lr, weight_decay=0.1)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps between steps."""

    def size(value) -> int:
        if torch.is_tensor(value):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(size(v) for v in value)
        return 0

    return sum(size(s) for s in optimizer.state.values())


def timed_step(optimizer, named, grads, device) -> float:
    # Gradients are restored untimed before every step: AlphaAdam's step consumes them.
    for (_, p), g in zip(named, grads, strict=True):
        p.grad = g.clone() if p.grad is None else p.grad.copy_(g)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(name: str, shapes, grads_seed: int, device, steps: int, warmup: int, lr: float) -> dict:
    """Time ``name`` against fused AdamW, interleaving their steps."""
    candidates = {}
    for label in (name, "adamw_fused"):
        named = make_parameters(shapes, device)
        candidates[label] = (build(label, named, lr), named, make_gradients(named, grads_seed))
    first_steps = {label: [] for label in candidates}
    for _ in range(warmup):  # compiles kernels and allocates state
        for label, (opt, named, grads) in candidates.items():
            first_steps[label].append(timed_step(opt, named, grads, device))
    times = {label: [] for label in candidates}
    for _ in range(steps):
        for label, (opt, named, grads) in candidates.items():
            times[label].append(timed_step(opt, named, grads, device))
    median = {label: statistics.median(t) for label, t in times.items()}
    opt, named, _ = candidates[name]
    n_params = sum(p.numel() for _, p in named)
    return {
        "name": name,
        "step_time_s": median[name],
        "adamw_fused_step_time_s": median["adamw_fused"],
        "ratio_vs_fused_adamw": median[name] / median["adamw_fused"],
        "warmup_s": sum(first_steps[name]),
        "state_bytes": state_bytes(opt),
        "state_bytes_per_param": state_bytes(opt) / n_params,
        "adamw_state_bytes_per_param": state_bytes(candidates["adamw_fused"][0]) / n_params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--optimizers", default=",".join(DEFAULT_OPTIMIZERS), help="registry names, comma-separated"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="width/vocabulary factor (1.0 = 124M parameters)"
    )
    parser.add_argument("--steps", type=int, default=15, help="timed steps per optimizer (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, state)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("results/bench/optim_step.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    shapes = gpt2_small_shapes(args.scale)
    n_params = sum(math.prod(s) for _, s in shapes)
    threads = torch.get_num_threads()
    print(f"{n_params / 1e6:.1f}M parameters in {len(shapes)} tensors on {device}, {threads} threads")
    results = []
    for name in args.optimizers.split(","):
        row = compare(name, shapes, 1, device, args.steps, args.warmup, lr=6e-4)
        results.append(row)
        ms, adamw_ms = row["step_time_s"] * 1e3, row["adamw_fused_step_time_s"] * 1e3
        print(
            f"{name:>14}: {ms:8.1f} ms/step  {row['ratio_vs_fused_adamw']:5.2f}x fused AdamW "
            f"({adamw_ms:.1f} ms)  "
            f"state {row['state_bytes_per_param']:.2f} B/param "
            f"(AdamW {row['adamw_state_bytes_per_param']:.2f})  warm-up {row['warmup_s']:.1f} s"
        )
    write_json(
        args.out,
        {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "parameters": n_params,
            "steps": args.steps,
            "results": results,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
