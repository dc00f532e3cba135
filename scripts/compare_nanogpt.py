"""Training throughput of recipes/pretrain_gpt.py against karpathy/nanoGPT's train.py, same config.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanogpt     # not part of this project
    python scripts/compare_nanogpt.py --nanogpt /tmp/nanogpt --repeats 3

Both train the tiny preset (2 layers, 2 heads, 64 wide, block 64, batch 4, no biases, no dropout) on the
embedded corpus with AdamW, float32, no torch.compile, on the CPU, for --steps steps; the runs
alternate so that both see the same machine load. Throughput is computed from the times of single
training steps (steps 11..N of every run, evaluation excluded), pooled over the runs: the median
step, and the 10th-percentile step (the usual estimate of the cost itself on a machine shared with
other work). Each program uses its own AdamW: nanoGPT's (foreach on CPU) and ours (torch's fastest
for the device, fused on CPU).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from alphaadam.data.embedded import ensure_embedded
from alphaadam.runs.metrics import MetricsLog

REPO = Path(__file__).resolve().parents[1]
TOKENS_PER_STEP = 4 * 64


def nanogpt_command(steps: int) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "--dataset=alphaadam_embedded",
        "--device=cpu",
        "--dtype=float32",
        "--compile=False",
        "--n_layer=2",
        "--n_head=2",
        "--n_embd=64",
        "--block_size=64",
        "--batch_size=4",
        "--bias=False",
        "--dropout=0.0",
        "--gradient_accumulation_steps=1",
        f"--max_iters={steps}",
        f"--lr_decay_iters={steps}",
        "--warmup_iters=10",
        "--learning_rate=0.003",
        "--min_lr=0.0003",
        "--eval_interval=100000",
        "--eval_iters=8",
        "--log_interval=1",
        "--always_save_checkpoint=False",
        f"--out_dir={tempfile.gettempdir()}/nanogpt-out",
    ]


def ours_command(steps: int, root: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "recipes/pretrain_gpt.py",
        "model=tiny",
        "optimizer=adamw",
        f"trainer.max_steps={steps}",
        "trainer.log_every=1",
        "trainer.eval_every=0",
        "trainer.dtype=float32",
        "trainer.device=cpu",
        "trainer.progress=none",
        f"data.dir={data_dir}",
        f"run.root={root}",
    ]


def nanogpt_step_times(output: str) -> list[float]:
    """Seconds per training step, from the "iter N: loss L, time T ms" lines."""
    times = re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", output)
    return [float(ms) / 1000 for i, ms in times if int(i) >= 10]


def ours_step_times(run_root: Path) -> list[float]:
    """Seconds per training step, from metrics.jsonl (one line per step, evaluation not timed)."""
    (log,) = run_root.glob("*/*/metrics.jsonl")
    records = MetricsLog(log.parent).read()
    return [TOKENS_PER_STEP / r["tokens_per_s"] for r in records if r["step"] > 10 and r.get("tokens_per_s")]


def tokens_per_s(step_times: list[float], quantile: float) -> float:
    ordered = sorted(step_times)
    return TOKENS_PER_STEP / ordered[int(quantile * (len(ordered) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("data/embedded"), help="embedded corpus directory")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both (default: unset)")
    args = parser.parse_args(argv)

    data = ensure_embedded(args.data)
    vocab = -(-data.vocab_size // 64) * 64  # what our recipe uses: the vocabulary rounded up to 64
    nano_data = args.nanogpt / "data" / "alphaadam_embedded"
    nano_data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        target = nano_data / f"{split}.bin"
        target.unlink(missing_ok=True)
        target.symlink_to((args.data / f"{split}.bin").resolve())
    with open(nano_data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": vocab}, f)

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    names = ("nanoGPT train.py", "alphaadam recipes/pretrain_gpt.py")
    steps: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        run = subprocess.run(
            nanogpt_command(args.steps), cwd=args.nanogpt, capture_output=True, text=True, env=env, check=True
        )
        nano = nanogpt_step_times(run.stdout)
        with tempfile.TemporaryDirectory() as root:
            cmd = ours_command(args.steps, Path(root), args.data.resolve())
            subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=True)
            ours = ours_step_times(Path(root))
        line = []
        for name, times in zip(names, (nano, ours), strict=True):
            steps[name] += times
            line.append(f"{name} {tokens_per_s(times, 0.5):,.0f}")
        print(f"repeat {repeat + 1}, median tokens/s: " + ", ".join(line), flush=True)
    threads = f", OMP_NUM_THREADS={args.threads}" if args.threads else ""
    print(f"\n{args.repeats} alternating runs of {args.steps} steps of {TOKENS_PER_STEP} tokens{threads}:")
    print(f"  {'':36s} {'median step':>14s} {'p10 step':>14s}")
    for name, times in steps.items():
        median, fast = tokens_per_s(times, 0.5), tokens_per_s(times, 0.1)
        print(f"  {name:36s} {median:>7,.0f} tok/s {fast:>8,.0f} tok/s")
    print("nanoGPT command:  cd NANOGPT && " + " ".join(nanogpt_command(args.steps)[1:]))
    print("our command:      " + " ".join(ours_command(args.steps, Path("ROOT"), args.data)[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
