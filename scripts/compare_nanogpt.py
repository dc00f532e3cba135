"""Training throughput of recipes/pretrain_gpt.py against karpathy/nanoGPT's train.py, same config.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanogpt     # not part of this project
    python scripts/compare_nanogpt.py --nanogpt /tmp/nanogpt --repeats 3

Both train the tiny preset (2 layers, 2 heads, 64 wide, block 64, batch 4, no biases, no dropout) on the
embedded corpus with AdamW, float32, no torch.compile, on the CPU, for --steps steps; the runs
alternate so that both see the same machine load. Throughput is the median over steps 11..N of the
time of one training step (evaluation excluded), as tokens per second. Each program uses its own
AdamW: nanoGPT's (foreach on CPU) and ours (torch's fastest for the device, fused on CPU).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import statistics
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
        "trainer.progress=lines",
        f"data.dir={data_dir}",
        f"run.root={root}",
    ]


def nanogpt_tokens_per_s(output: str) -> float:
    times = {int(i): float(ms) for i, ms in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", output)}
    steady = [ms for i, ms in times.items() if i >= 10]
    return TOKENS_PER_STEP / (statistics.median(steady) / 1000)


def ours_tokens_per_s(run_root: Path) -> float:
    (log,) = run_root.glob("*/*/metrics.jsonl")
    rates = [
        r["tokens_per_s"] for r in MetricsLog(log.parent).read() if r["step"] > 10 and r.get("tokens_per_s")
    ]
    return statistics.median(rates)


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
    results: dict[str, list[float]] = {"nanoGPT train.py": [], "alphaadam recipes/pretrain_gpt.py": []}
    for repeat in range(args.repeats):
        run = subprocess.run(
            nanogpt_command(args.steps), cwd=args.nanogpt, capture_output=True, text=True, env=env, check=True
        )
        results["nanoGPT train.py"].append(nanogpt_tokens_per_s(run.stdout))
        with tempfile.TemporaryDirectory() as root:
            cmd = ours_command(args.steps, Path(root), args.data.resolve())
            subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=True)
            results["alphaadam recipes/pretrain_gpt.py"].append(ours_tokens_per_s(Path(root)))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} tokens/s" for k, v in results.items()))
    threads = f", OMP_NUM_THREADS={args.threads}" if args.threads else ""
    runs = f"{args.repeats} alternating runs of {args.steps} steps of {TOKENS_PER_STEP} tokens{threads}"
    print(f"\nmedian over {runs}:")
    for name, values in results.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"  {name:36s} {statistics.median(values):>10,.0f} tokens/s   (runs: {runs})")
    print("nanoGPT command:  cd NANOGPT && " + " ".join(nanogpt_command(args.steps)[1:]))
    print("our command:      " + " ".join(ours_command(args.steps, Path("ROOT"), args.data)[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
