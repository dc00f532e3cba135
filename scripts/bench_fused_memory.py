"""Training-step memory of AdaLomo, plain and fused into backward, against AdamW, on the GPT-2 recipe's model.

    python scripts/bench_fused_memory.py                      # GPT-2 124M (model=gpt2_125m), CPU, ~1 min
    python scripts/bench_fused_memory.py --model tiny --tokens 64

Each configuration runs in a fresh process: the recipe's GPT (``configs/model/<model>.yaml``) takes
``--steps`` training steps of one sequence of ``--tokens`` tokens with gradient clipping at 1.0 (the
recipe's setting; the fused form also without it, which saves its second backward pass). Reported
per configuration:

* ``peak_grad_bytes``: the most gradient bytes alive at once, sampled whenever a gradient is final
  (a post-accumulate-grad hook on every parameter) and after backward: a full set for AdamW and
  step-form AdaLomo, one parameter's for the fused form;
* ``state_bytes``: every tensor in the optimizer's state;
* ``peak_rss_bytes``: the process's peak resident memory (``ru_maxrss``), activations, the Python
  runtime and whatever the CPU allocator keeps after a free included, and its difference to AdamW's.

Writes results/memory_efficient/fused_memory.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name: (optimizer, fused into backward, gradient-norm clipping)
CONFIGS = {
    "adamw": ("adamw", False, 1.0),
    "adalomo": ("adalomo", False, 1.0),
    "adalomo_fused": ("adalomo", True, 1.0),  # two backward passes (the norm first)
    "adalomo_fused_noclip": ("adalomo", True, 0.0),  # one pass
}


def measure(optimizer_name: str, fused: bool, clip: float, model_name: str, tokens: int, steps: int) -> dict:
    from alphaadam.models.gpt import GPT, GPTConfig
    from alphaadam.optim import build_optimizer
    from alphaadam.optim.fused_backward import FusedBackwardUpdate
    from alphaadam.train.config import compose
    from alphaadam.train.measure import optimizer_state_bytes

    node = compose("pretrain_gpt", [f"model={model_name}"]).model
    vocab = node.vocab_size or 5184  # tiny: the embedded corpus's vocabulary, rounded up
    shape = {k: node[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias")}
    config = GPTConfig(vocab_size=vocab, **shape)
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = build_optimizer(model, optimizer_name, lr=1e-3)
    params = list(model.parameters())
    peak = 0

    def grad_bytes() -> int:
        return sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)

    def observe(_):
        nonlocal peak
        peak = max(peak, grad_bytes())

    fused_update = FusedBackwardUpdate(optimizer, max_norm=clip) if fused else None
    if not fused:  # the fused form's own hooks free each gradient; here only look
        for p in params:
            p.register_post_accumulate_grad_hook(observe)
    else:
        original = optimizer.update_parameter

        def observed(p, grad_scale=1.0, consume_grad=False):
            observe(p)
            original(p, grad_scale, consume_grad=consume_grad)

        optimizer.update_parameter = observed
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, vocab, (1, tokens), generator=gen)
        _, loss = model(x, x)
        if fused_update:
            fused_update.backward(loss)
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            observe(None)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    n_params = sum(p.numel() for p in params)
    return {
        "parameters": n_params,
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "peak_grad_bytes": peak,
        "largest_param_bytes": max(p.numel() * p.element_size() for p in params),
        "state_bytes": optimizer_state_bytes(optimizer),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2_125m", help="a configs/model/ preset")
    parser.add_argument("--tokens", type=int, default=128, help="tokens of the one sequence per step")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results/memory_efficient/fused_memory.json")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)  # the child process's job
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*CONFIGS[args.one], args.model, args.tokens, args.steps)))
        return {}

    rows = {}
    for name in CONFIGS:
        child = [sys.executable, __file__, "--one", name, "--model", args.model]
        child += ["--tokens", str(args.tokens), "--steps", str(args.steps)]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    base = rows["adamw"]
    for row in rows.values():
        row["peak_rss_minus_adamw_bytes"] = row["peak_rss_bytes"] - base["peak_rss_bytes"]
        row["grad_plus_state_bytes"] = row["peak_grad_bytes"] + row["state_bytes"]
        row["grad_plus_state_vs_adamw"] = row["grad_plus_state_bytes"] / base["grad_plus_state_bytes"]
    result = {
        "model": args.model,
        "tokens_per_step": args.tokens,
        "steps": args.steps,
        "device": "cpu",
        "dtype": "float32",
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    mb = 2**20
    print(f"{'':<20} {'peak grads MiB':>15} {'state MiB':>10} {'grads+state / AdamW':>20} {'RSS MiB':>8}")
    for name, row in rows.items():
        print(
            f"{name:<20} {row['peak_grad_bytes'] / mb:>15.1f} {row['state_bytes'] / mb:>10.1f} "
            f"{row['grad_plus_state_vs_adamw']:>20.3f} {row['peak_rss_bytes'] / mb:>8.0f}"
        )
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
