"""Optimizer step time and state bytes per parameter on GPT-2-small-shaped tensors.

    python scripts/bench_optim.py                    # every registered optimizer, GPT-2 124M shapes
    python scripts/bench_optim.py --scale 0.25       # a quick run on a narrower, shallower model
    python scripts/bench_optim.py --names alphaadam cadamw adamw_foreach --rounds 10

Every optimizer is built with ``build_optimizer(model, name, **settings)`` where the settings are
``configs/optimizer/<name>.yaml`` (minus ``name`` and ``lr``), on one shared model, and timed against
torch's fastest AdamW, ``torch.optim.AdamW(fused=True)``, in the same process, interleaved round by
round so that machine noise hits all of them alike. A step is timed alone: before each one its
gradients are copied in (untimed) from a pool of ``--pool`` independent random gradients, taken in
turn and each time rotated by a random offset (so that no step sees a gradient its momentum already
holds), and the momentum agrees with about half of each new gradient, as in training; ``--pool 1``
restores the same gradients every step, which fills the mask (density 1). The mean mask density the masked
optimizers saw is printed and recorded. Reported: the median (and
minimum) wall-clock step time and the median process CPU time, their ratios to fused AdamW, the
untimed warm-up (first steps: torch.compile of AlphaAdam's kernels, state allocation), and the
bytes of every tensor in ``optimizer.state`` (quantised ones included, shared tensors counted once)
per model parameter. GaLore recomputes its SVD only every ``update_proj_gap`` steps; its row adds
the timed cost of a refresh step, amortised over the gap. LDAdam keeps its error buffers in
``p.grad``, which ``optimizer.zero_grad()`` does not free: those bytes are reported separately.

Writes results/bench/optim_step.json, with the CPU's model and flags and the vector extension
AlphaAdam's C kernels were built for (``$ALPHAADAM_MARCH`` picks another build, e.g. ``x86-64-v3``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alphaadam.optim import available_optimizers, build_optimizer, native  # noqa: E402

REFERENCE = "adamw_fused"
# Every registered optimizer ("adamw" is the reference itself), plus torch's foreach AdamW.
OPTIMIZERS = (*(n for n in available_optimizers() if n != "adamw"), "adamw_foreach")


def gpt2_shapes(scale: float = 1.0) -> tuple[list[tuple[str, tuple[int, ...]]], SimpleNamespace]:
    """(name, shape) of nanoGPT's GPT-2 124M parameters (lm_head tied to wte), and its config.

    ``scale`` < 1 shrinks width, depth, vocabulary and context proportionally (12 heads kept).
    """
    n_head = 12
    n_embd = max(n_head, n_head * round(64 * scale))
    n_layer = max(1, round(12 * scale))
    vocab = max(64, round(50304 * scale))
    block = max(16, round(1024 * scale))
    shapes = [("transformer.wte.weight", (vocab, n_embd)), ("transformer.wpe.weight", (block, n_embd))]
    for i in range(n_layer):
        h = f"transformer.h.{i}"
        shapes += [
            (f"{h}.ln_1.weight", (n_embd,)),
            (f"{h}.ln_1.bias", (n_embd,)),
            (f"{h}.attn.c_attn.weight", (3 * n_embd, n_embd)),
            (f"{h}.attn.c_attn.bias", (3 * n_embd,)),
            (f"{h}.attn.c_proj.weight", (n_embd, n_embd)),
            (f"{h}.attn.c_proj.bias", (n_embd,)),
            (f"{h}.ln_2.weight", (n_embd,)),
            (f"{h}.ln_2.bias", (n_embd,)),
            (f"{h}.mlp.c_fc.weight", (4 * n_embd, n_embd)),
            (f"{h}.mlp.c_fc.bias", (4 * n_embd,)),
            (f"{h}.mlp.c_proj.weight", (n_embd, 4 * n_embd)),
            (f"{h}.mlp.c_proj.bias", (n_embd,)),
        ]
    shapes += [("transformer.ln_f.weight", (n_embd,)), ("transformer.ln_f.bias", (n_embd,))]
    config = SimpleNamespace(
        n_head=n_head, n_embd=n_embd, n_layer=n_layer, vocab_size=vocab, block_size=block
    )
    return shapes, config


def shaped_model(shapes, config=None, dtype=torch.float32, seed: int = 0) -> nn.Module:
    """An ``nn.Module`` whose ``named_parameters()`` are exactly ``shapes`` (random values, no forward)."""
    gen = torch.Generator().manual_seed(seed)
    root = nn.Module()
    for name, shape in shapes:
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        value = torch.randn(shape, generator=gen) * 0.02 if len(shape) > 1 else torch.ones(shape)
        module.register_parameter(leaf, nn.Parameter(value.to(dtype)))
    if config is not None:
        root.config = config
    return root


def make_grads(model: nn.Module, seed: int = 1) -> list[torch.Tensor]:
    """Random gradients five times the coupled weight-decay term 0.1 * theta of SGD's config (the
    parameters are 0.02 * N(0, 1)), so that the term does not decide AlphaSGD's mask."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=gen).mul_(1e-2).to(p.dtype) for p in model.parameters()]


def restore_grads(model: nn.Module, grads: list[torch.Tensor]) -> None:
    for p, g in zip(model.parameters(), grads, strict=True):
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)  # in place: LDAdam's buffer object stays the same


class GradientPool:
    """Independent random gradients, handed to each optimizer in turn (its own turn counter).

    With more than one, each turn rotates every tensor's values by an offset drawn from the turn
    number (a copy like any other), so that successive steps see unrelated gradients."""

    def __init__(self, model: nn.Module, size: int):
        self.model = model
        self.grads = [make_grads(model, seed=1 + k) for k in range(size)]
        self.turns: dict[int, int] = {}

    def load_next(self, optimizer) -> None:
        turn = self.turns.get(id(optimizer), 0)
        self.turns[id(optimizer)] = turn + 1
        grads = self.grads[turn % len(self.grads)]
        if len(self.grads) == 1:
            restore_grads(self.model, grads)
            return
        gen = torch.Generator().manual_seed(turn)
        for p, g in zip(self.model.parameters(), grads, strict=True):
            if p.grad is None:
                p.grad = torch.empty_like(g)
            src, dst = g.view(-1), p.grad.view(-1)
            shift = int(torch.randint(src.numel(), (), generator=gen))
            dst[: src.numel() - shift].copy_(src[shift:])
            dst[src.numel() - shift :].copy_(src[:shift])


def mask_density(optimizer) -> float | None:
    """Element-weighted mean mask density of the last step, for optimizers that record one."""
    kept = total = 0.0
    for p, state in optimizer.state.items():
        if "mask_density" in state:
            kept += float(state["mask_density"]) * p.numel()
            total += p.numel()
    return kept / total if total else None


def time_steps(optimizer, pool: GradientPool, steps: int) -> list[tuple[float, float, float | None]]:
    """(wall, process CPU seconds, mask density) of each of ``steps`` calls of ``optimizer.step()``.

    The next gradients of the pool are copied in (untimed) before each call. The CPU time sums this
    process's threads; on a machine shared with other jobs it is less disturbed than the wall time.
    """
    times = []
    for _ in range(steps):
        pool.load_next(optimizer)
        wall, cpu = time.perf_counter(), time.process_time()
        optimizer.step()
        times.append((time.perf_counter() - wall, time.process_time() - cpu, mask_density(optimizer)))
    return times


def cpu_record() -> dict:
    """The CPU's model and flags, and the vector extension AlphaAdam's C kernels were built for."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = info.get("flags", info.get("Features", "")).split()
    try:
        kernels = native.isa()
    except native.NativeUnavailable as err:
        kernels = f"unavailable: {err}"
    return {
        "model": info.get("model name", platform.processor() or platform.machine()),
        "avx512f": "avx512f" in flags,
        "avx2": "avx2" in flags,
        "flags": flags,
        "c_kernel_isa": kernels,
    }


def _tensors(value):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif hasattr(value, "ortho_matrix"):  # galore-torch's projector object
        yield from _tensors(value.ortho_matrix)


def state_bytes(optimizer) -> int:
    """Bytes of all tensors in ``optimizer.state``; a tensor shared by several entries counts once.

    Gradients are not counted (LDAdam's error buffer, in its state, is ``p.grad``: see kept_grad_bytes).
    """
    seen, total = set(), 0
    for p in optimizer.state:
        if p.grad is not None:
            g = p.grad
            seen.add((g.untyped_storage().data_ptr(), g.storage_offset(), g.numel(), g.dtype))
    for state in optimizer.state.values():
        for t in _tensors(state):
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


def kept_grad_bytes(optimizer, model: nn.Module, grads: list[torch.Tensor]) -> int:
    """Bytes of gradients that ``optimizer.zero_grad()`` leaves allocated (LDAdam's error buffers)."""
    restore_grads(model, grads)
    optimizer.zero_grad()
    return sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)


def load_settings(name: str) -> dict:
    """configs/optimizer/<name>.yaml as the GPT-2 recipe composes it (betas etc. resolved), minus lr."""
    from alphaadam.train.config import compose, optimizer_settings

    _, settings = optimizer_settings(compose("pretrain_gpt", [f"optimizer={name}"]).optimizer)
    for key in ("lr", "weight_decay_rule"):  # the benchmark sets its own rate and groups
        settings.pop(key, None)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}


def build(name: str, model: nn.Module, settings: dict):
    if name == REFERENCE:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    if name == "adamw_foreach":
        return torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    return build_optimizer(model, name, lr=1e-4, **settings)


def _galore_refresh_times(optimizer, pool, steps: int) -> list[tuple[float, float, float | None]]:
    """Step times with every GaLore projector forced to recompute its SVD."""
    projectors = [s["projector"] for s in optimizer.state.values() if "projector" in s]
    gaps = [p.update_proj_gap for p in projectors]
    for p in projectors:
        p.update_proj_gap = 1
    try:
        return time_steps(optimizer, pool, steps)
    finally:
        for p, gap in zip(projectors, gaps, strict=True):
            p.update_proj_gap = gap


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the model (1.0 = GPT-2 124M)")
    parser.add_argument("--names", nargs="*", default=list(OPTIMIZERS))
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per optimizer and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch's (and the C kernels') threads")
    parser.add_argument(
        "--pool", type=int, default=2, help="random gradients taken in turn (1: the same every step)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "optim_step.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    shapes, config = gpt2_shapes(args.scale)
    model = shaped_model(shapes, config)
    n_params = sum(p.numel() for p in model.parameters())
    pool = GradientPool(model, args.pool)
    names = [REFERENCE, *args.names]
    settings = {n: ({} if n in (REFERENCE, "adamw_foreach") else load_settings(n)) for n in names}
    cpu = cpu_record()
    print(
        f"{n_params / 1e6:.1f}M parameters ({len(shapes)} tensors), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {cpu['model']} (AVX-512: {cpu['avx512f']}), "
        f"C kernels built for {cpu['c_kernel_isa']}"
    )

    optimizers, times, refresh, warmup = {}, {n: [] for n in names}, {}, {}
    for name in names:  # all share the model's parameters; each keeps its own state
        optimizers[name] = build(name, model, settings[name])
        warmup[name] = sum(w for w, _, _ in time_steps(optimizers[name], pool, args.warmup))
    for _ in range(args.rounds):
        for name in names:
            times[name] += time_steps(optimizers[name], pool, args.steps)
    if "galore" in names:
        refresh["galore"] = _galore_refresh_times(optimizers["galore"], pool, max(3, args.steps))

    rows = {}
    for name in names:
        wall = [w for w, _, _ in times[name]]
        cpu_s = [c for _, c, _ in times[name]]
        densities = [d for _, _, d in times[name] if d is not None]
        summary = {"median": statistics.median(wall), "min": min(wall)}
        summary["cpu_median"] = statistics.median(cpu_s)
        if name in refresh:  # amortise GaLore's SVD refresh over its gap
            gap = settings[name].get("update_proj_gap", 200)
            summary["refresh_median"] = statistics.median(w for w, _, _ in refresh[name])
            summary["refresh_cpu_median"] = statistics.median(c for _, c, _ in refresh[name])
            summary["median"] += (summary["refresh_median"] - summary["median"]) / gap
            summary["min"] += (min(w for w, _, _ in refresh[name]) - summary["min"]) / gap
            summary["cpu_median"] += (summary["refresh_cpu_median"] - summary["cpu_median"]) / gap
        rows[name] = {
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings[name].items()},
            "step_s": summary,
            "step_s_samples": wall,
            "step_cpu_s_samples": cpu_s,
            "mask_density_mean": statistics.fmean(densities) if densities else None,
            "warmup_s": warmup[name],
            "state_bytes": state_bytes(optimizers[name]),
            "kept_grad_bytes": kept_grad_bytes(optimizers[name], model, pool.grads[0]),
        }
    base = rows[REFERENCE]["step_s"]
    for row in rows.values():
        row["step_time_vs_fused_adamw"] = {
            k: row["step_s"][k] / base[k] for k in ("median", "min", "cpu_median")
        }
        row["state_bytes_per_param"] = row["state_bytes"] / n_params
        row["kept_grad_bytes_per_param"] = row["kept_grad_bytes"] / n_params
    summary_rows = [
        {
            "name": name,
            "step_time_s": row["step_s"]["median"],
            "ratio_vs_fused_adamw": row["step_time_vs_fused_adamw"]["median"],
            "cpu_ratio_vs_fused_adamw": row["step_time_vs_fused_adamw"]["cpu_median"],
            "state_bytes_per_param": row["state_bytes_per_param"],
            "mask_density_mean": row["mask_density_mean"],
        }
        for name, row in rows.items()
    ]

    result = {
        "model": {
            "shapes": "nanoGPT GPT-2 124M" if args.scale == 1.0 else f"GPT-2 124M x {args.scale}",
            "parameters": n_params,
            **vars(config),
        },
        "dtype": "float32",
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": cpu,
        "gradient_pool": args.pool,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "reference": "torch.optim.AdamW(fused=True)",
        "results": summary_rows,
        "optimizers": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(
        f"{'':<14} {'step s':>8} {'x fused AdamW: median':>22} {'min':>7} {'cpu':>7} {'state B/param':>14}"
        f" {'kept grad B/param':>18} {'warm-up s':>10} {'mask density':>13}"
    )
    for name, row in rows.items():
        ratio = row["step_time_vs_fused_adamw"]
        print(
            f"{name:<14} {row['step_s']['median']:>8.3f} {ratio['median']:>22.2f} {ratio['min']:>7.2f} "
            f"{ratio['cpu_median']:>7.2f} {row['state_bytes_per_param']:>14.3f} "
            f"{row['kept_grad_bytes_per_param']:>18.3f} {row['warmup_s']:>10.1f} "
            + (f"{density:>13.2f}" if (density := row["mask_density_mean"]) is not None else f"{'-':>13}")
        )
    densities = [r["mask_density_mean"] for r in rows.values() if r["mask_density_mean"] is not None]
    if densities:
        print(f"mean mask density seen: {statistics.fmean(densities):.2f} (realistic: 0.4-0.7)")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
