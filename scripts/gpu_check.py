"""One check of the optimizers on a GPU: step time, launches, a GPT-2 run, a GLUE step, FSDP2.

    make gpu-check                                      # one CUDA GPU, 8-minute budget, nothing downloaded
    python scripts/gpu_check.py --parts step_time launches
    python scripts/gpu_check.py --device cpu --smoke    # tiny shapes on a CPU: the script runs end to end

Parts (each a group of rows in one table; a part that fails becomes an "error" row and the check
goes on, exiting 1 at the end; parts not started within ``--budget-min`` minutes are skipped):

* ``step_time``: AlphaAdam, CAdamW and AlphaSGD ``step()`` against ``torch.optim.AdamW(fused=True)``
  on GPT-2 124M shapes, fp32 and bf16 parameters, interleaved rounds on one model (as
  ``scripts/bench_optim.py``). Each timed step takes the next gradient of a small pool of independent
  random gradients, copied in untimed, so the mask is as full as in training, not full; the mean mask
  density seen is printed with each row.
* ``launches``: per ``step()`` on the same shapes (fp32), the GPU kernels run (``torch.profiler``;
  on the CPU instead the ATen operations dispatched, a ``TorchDispatchMode`` count, which cannot see
  inside compiled code); the note gives the same count for 16, 148 and 600 tensors of 64 x 64,
  which a multi-tensor step keeps flat.
* ``pretrain``: ``recipes/pretrain_gpt.py`` with ``model=gpt2_125m trainer=gpt2`` (bf16, torch.compile)
  on the embedded corpus for a few hundred steps, AdamW and AlphaAdam: tokens/s and MFU.
* ``glue``: a RoBERTa-base-shaped classifier (random init) with each optimizer of Table 1, built with
  the GLUE recipe's settings; one training step (forward, backward, clipping, step) on a batch of 32 x 128.
* ``fsdp2``: AlphaAdam on a ``fully_shard``-ed GPT in a one-process group (nccl on CUDA, gloo on the
  CPU), in a child process, against the same model unsharded with the same batches.

Writes gpu_check.md and gpu_check.json under results/gpu_check/ (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_optim import REFERENCE, build, gpt2_shapes, load_settings, restore_grads, shaped_model  # noqa: E402

from alphaadam.optim import build_optimizer  # noqa: E402
from alphaadam.train.config import build_optimizer_from_config, compose  # noqa: E402
from alphaadam.train.measure import mask_stats_record  # noqa: E402

PARTS = ("step_time", "launches", "pretrain", "glue", "fsdp2")
STEP_OPTIMIZERS = ("alphaadam", "cadamw", "alphasgd")
PRETRAIN_OPTIMIZERS = ("adamw", "alphaadam")


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: the real one (a GPU, about 8 minutes) or the smoke test (a CPU, seconds)."""

    scale: float  # GPT-2 124M shapes x scale, for step_time and launches
    pool: int  # random gradients the timed steps cycle through
    warmup: int
    rounds: int
    steps: int  # timed steps per optimizer and round
    tensor_counts: tuple[int, ...]  # launches: a multi-tensor step's count must not grow with these
    pretrain: tuple[str, ...]  # recipe overrides
    glue_model: dict  # transformers.RobertaConfig fields (defaults: RoBERTa-base)
    glue_batch: tuple[int, int]  # sentences x tokens
    glue_steps: int  # timed, after one warm-up step
    fsdp_model: dict  # alphaadam.models.gpt.GPTConfig fields
    fsdp_steps: int


FULL = Plan(
    scale=1.0,
    pool=4,
    warmup=3,
    rounds=5,
    steps=4,
    tensor_counts=(16, 148, 600),
    pretrain=(
        "model=gpt2_125m",
        "trainer=gpt2",
        "trainer.max_steps=300",
        "trainer.tokens_per_step=null",  # one micro-batch of 12 x 1024 tokens per step
        "trainer.dtype=bfloat16",
        "trainer.compile=true",
        "trainer.eval_every=0",
        "trainer.eval_at_fractions=[]",
        "trainer.eval_batches=4",
        "trainer.checkpoint_every=0",
    ),
    glue_model={},
    glue_batch=(32, 128),
    glue_steps=10,
    fsdp_model=dict(n_layer=12, n_head=12, n_embd=768, block_size=256, vocab_size=50304),
    fsdp_steps=5,
)
SMOKE = Plan(
    scale=0.05,
    pool=2,
    warmup=1,
    rounds=2,
    steps=1,
    tensor_counts=(2, 4, 8),
    pretrain=(
        "model=tiny",
        "trainer.max_steps=4",
        "trainer.eval_every=0",
        "trainer.eval_at_fractions=[]",
        "trainer.eval_batches=1",
        "trainer.checkpoint_every=0",
        "model.block_size=32",
        "model.micro_batch_size=2",
    ),
    glue_model=dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=40,
    ),
    glue_batch=(4, 16),
    glue_steps=2,
    fsdp_model=dict(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=64),
    fsdp_steps=3,
)


def row(part: str, case: str, optimizer: str, metric: str, value, ratio=None, note: str = "") -> dict:
    return dict(part=part, case=case, optimizer=optimizer, metric=metric, value=value, ratio=ratio, note=note)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gradient_pool(model: torch.nn.Module, size: int, seed: int = 1) -> list[list[torch.Tensor]]:
    """``size`` independent random gradients (one tensor per parameter each), on the model's device."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    return [
        [
            torch.randn(p.shape, generator=gen, device=device).mul_(1e-3).to(p.dtype)
            for p in model.parameters()
        ]
        for _ in range(size)
    ]


def timed_step(optimizer, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


def step_time(plan: Plan, device: torch.device) -> list[dict]:
    shapes, config = gpt2_shapes(plan.scale)
    names = [REFERENCE, *STEP_OPTIMIZERS]
    settings = {n: ({} if n == REFERENCE else load_settings(n)) for n in names}
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        model = shaped_model(shapes, config, dtype).to(device)
        pool = gradient_pool(model, plan.pool)
        optimizers = {n: build(n, model, settings[n]) for n in names}
        times, densities = {n: [] for n in names}, {n: [] for n in names}
        taken = dict.fromkeys(names, 0)  # each optimizer's k-th step gets gradient k of the pool
        for rounds, steps, record in ((1, plan.warmup, False), (plan.rounds, plan.steps, True)):
            for _ in range(rounds):
                for name in names:  # interleaved, so that drifts of the machine hit all alike
                    for _ in range(steps):
                        restore_grads(model, pool[taken[name] % len(pool)])  # untimed
                        taken[name] += 1
                        elapsed = timed_step(optimizers[name], device)
                        if record:
                            times[name].append(elapsed)
                            density = mask_stats_record(optimizers[name]).get("mask_density_mean")
                            if density is not None:
                                densities[name].append(density)
        base = statistics.median(times[REFERENCE])
        case = f"GPT-2 124M x {plan.scale:g} shapes, {str(dtype).removeprefix('torch.')}"
        for name in names:
            median = statistics.median(times[name])
            note = f"mask density {statistics.mean(densities[name]):.2f}" if densities[name] else ""
            rows.append(row("step_time", case, name, "step ms (median)", median * 1e3, median / base, note))
        del optimizers, pool, model
    return rows


class DispatchCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def gpu_kernels(optimizer, device: torch.device) -> int:
    """GPU kernels (and copies) that one ``step()`` runs, from torch.profiler's device-side events."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        optimizer.step()
        synchronize(device)
    return sum(1 for event in prof.events() if event.device_type == DeviceType.CUDA)


def step_launches(name: str, model: torch.nn.Module, device: torch.device) -> tuple[str, int | None]:
    """(what was counted, count) for one steady ``step()`` of optimizer ``name``: GPU kernels on
    CUDA (torch.profiler), ATen operations on the CPU (None where torch.compile runs the step)."""
    grads = gradient_pool(model, 1)[0]
    optimizer = build(name, model, {} if name == REFERENCE else load_settings(name))
    for _ in range(2):  # state allocated, kernels compiled: count a steady step
        restore_grads(model, grads)
        optimizer.step()
    restore_grads(model, grads)
    if device.type == "cuda":
        return "GPU kernels per step", gpu_kernels(optimizer, device)
    try:
        with DispatchCounter() as counter:
            optimizer.step()
        return "ATen ops per step", counter.count
    except RuntimeError:  # torch.compile does not trace under a TorchDispatchMode
        torch._dynamo.reset()  # the failed attempt leaves the compiled functions marked as skipped
        return "ATen ops per step", None


def launches(plan: Plan, device: torch.device) -> list[dict]:
    """Counts on GPT-2's shapes, and on 16 / 148 / 600 equal tensors: a multi-tensor step stays flat."""
    shapes, config = gpt2_shapes(plan.scale)
    case = f"GPT-2 124M x {plan.scale:g} shapes ({len(shapes)} tensors), float32"
    rows = []
    for name in (REFERENCE, *STEP_OPTIMIZERS):
        metric, value = step_launches(name, shaped_model(shapes, config).to(device), device)
        scaling = [
            step_launches(name, shaped_model([(f"w{i}", (64, 64)) for i in range(n)]).to(device), device)[1]
            for n in plan.tensor_counts
        ]
        note = (
            f"{' / '.join(map(str, plan.tensor_counts))} tensors of 64 x 64: {' / '.join(map(str, scaling))}"
        )
        if value is None:
            note = "not countable: torch.compile does not run under a TorchDispatchMode"
        rows.append(row("launches", case, name, metric, value, note=note))
    return rows


def pretrain(plan: Plan, device: torch.device) -> list[dict]:
    from recipes.pretrain_gpt import train

    rows = []
    with tempfile.TemporaryDirectory() as scratch:  # no run directory is reused or kept
        for name in PRETRAIN_OPTIMIZERS:
            overrides = [
                *plan.pretrain,
                f"optimizer={name}",
                f"trainer.device={device.type}",
                "trainer.progress=none",
                "logger=none",
                f"run.root={scratch}/runs",
                f"data.dir={scratch}/embedded",
            ]
            cfg = compose("pretrain_gpt", overrides)
            result = train(cfg)
            timing, final = result["timing"], result["metrics"]["final"]
            t = cfg.trainer
            case = f"{cfg.model.name}, {result['step']} steps, dtype {t.dtype}, compile {t.compile}"
            note = f"final train loss {final.get('train_loss', float('nan')):.3f}"
            rows.append(row("pretrain", case, name, "tokens/s", timing.get("tokens_per_s"), note=note))
            rows.append(row("pretrain", case, name, "MFU", timing.get("mfu")))
    return rows


def table1_optimizers() -> list[str]:
    spec = yaml.safe_load((ROOT / "configs" / "report" / "table1_glue.yaml").read_text())
    return [item["value"] for item in spec["rows"]["items"]]


def glue(plan: Plan, device: torch.device) -> list[dict]:
    import transformers

    config = transformers.RobertaConfig(**plan.glue_model, num_labels=2)
    batch, length = plan.glue_batch
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(3, config.vocab_size, (batch, length), generator=gen),
        "labels": torch.randint(0, 2, (batch,), generator=gen),
    }
    inputs = {k: v.to(device) for k, v in inputs.items()}
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    times = {}
    for name in table1_optimizers():
        torch.manual_seed(0)
        model = transformers.RobertaForSequenceClassification(config).to(device)
        optimizer = build_optimizer_from_config(
            model, compose("finetune_glue", [f"optimizer={name}"]).optimizer
        )
        samples = []
        for _ in range(1 + plan.glue_steps):
            synchronize(device)
            start = time.perf_counter()
            with autocast:
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples[1:])  # the first step allocates state
        del model, optimizer
    precision = "bf16 autocast" if device.type == "cuda" else "float32"
    case = f"RoBERTa-{'base' if not plan.glue_model else 'tiny'} shapes, {batch} x {length}, {precision}"
    return [
        row("glue", case, name, "train step ms (median)", t * 1e3, t / times["adamw"])
        for name, t in times.items()
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp2_worker(plan: Plan, device: torch.device) -> dict:
    """AlphaAdam on a fully_shard-ed GPT and on the same GPT unsharded, in a group of one process."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from alphaadam.models.gpt import GPT, GPTConfig

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        config = GPTConfig(dropout=0.0, bias=False, **plan.fsdp_model)
        torch.manual_seed(0)
        plain = GPT(config).to(device)
        sharded = GPT(config).to(device)
        sharded.load_state_dict(plain.state_dict())
        for block in sharded.transformer.h:
            fully_shard(block)
        fully_shard(sharded)
        settings = load_settings("alphaadam")
        optimizers = [build_optimizer(m, "alphaadam", lr=1e-3, **settings) for m in (plain, sharded)]
        gen = torch.Generator().manual_seed(0)
        batches = [
            torch.randint(0, config.vocab_size, (4, config.block_size), generator=gen).to(device)
            for _ in range(plan.fsdp_steps)
        ]
        times = []
        for idx in batches:
            for model, optimizer in zip((plain, sharded), optimizers, strict=True):
                _, loss = model(idx, idx)
                loss.backward()
                if model is sharded:
                    times.append(timed_step(optimizer, device))
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        diff = max(
            (p.full_tensor() - q).abs().max().item()
            for p, q in zip(sharded.parameters(), plain.parameters(), strict=True)
        )
        return {"max_param_diff": diff, "step_ms": statistics.median(times) * 1e3, "steps": len(batches)}
    finally:
        dist.destroy_process_group()


def fsdp2(plan: Plan, device: torch.device, smoke: bool) -> list[dict]:
    """Runs :func:`fsdp2_worker` in a child process: a crash there (a signal) is reported, not fatal."""
    command = [
        sys.executable,
        __file__,
        "--fsdp2-worker",
        "--device",
        device.type,
        *(["--smoke"] if smoke else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    case = f"GPT {plan.fsdp_model['n_layer']} layers x {plan.fsdp_model['n_embd']}, fully_shard, 1 process"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode < 0:
        raise RuntimeError(f"the FSDP2 child process was killed by signal {-done.returncode}")
    if done.returncode != 0 or not lines:
        last = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise RuntimeError(f"the FSDP2 child process failed: {last[0]}")
    result = json.loads(lines[-1])
    note = f"{result['steps']} steps vs the unsharded model"
    return [
        row("fsdp2", case, "alphaadam", "step ms (median)", result["step_ms"]),
        row("fsdp2", case, "alphaadam", "max |param - unsharded|", result["max_param_diff"], note=note),
    ]


def markdown(rows: list[dict], header: str) -> str:
    def show(value) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return str(value)

    lines = [
        header,
        "",
        "| part | case | optimizer | figure | value | vs baseline | note |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else ""
        cells = (r["part"], r["case"], r["optimizer"], r["metric"], show(r["value"]), ratio, r["note"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and few steps (tests the script)")
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check")
    parser.add_argument(
        "--budget-min", type=float, default=8.0, help="parts not started by then are skipped (a row says so)"
    )
    parser.add_argument("--fsdp2-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run it on a "
            "GPU node with a CUDA build of torch, or use --device cpu --smoke to test the script",
            file=sys.stderr,
        )
        return 2
    if args.device == "cpu" and not args.smoke:
        print(
            "gpu_check: --device cpu runs only with --smoke (the full sizes are for a GPU)", file=sys.stderr
        )
        return 2
    plan, device = (SMOKE if args.smoke else FULL), torch.device(args.device)
    if args.fsdp2_worker:
        print(json.dumps(fsdp2_worker(plan, device)))
        return 0

    runners = {
        "step_time": lambda: step_time(plan, device),
        "launches": lambda: launches(plan, device),
        "pretrain": lambda: pretrain(plan, device),
        "glue": lambda: glue(plan, device),
        "fsdp2": lambda: fsdp2(plan, device, args.smoke),
    }
    rows, seconds, failed = [], {}, False
    check_start = time.perf_counter()
    for part in args.parts:
        start = time.perf_counter()
        if start - check_start > 60 * args.budget_min:
            rows.append(
                row(part, "", "", "skipped", None, note=f"the {args.budget_min:g}-minute budget was spent")
            )
            continue
        try:
            rows += runners[part]()
        except Exception as err:  # one broken part must not hide the others' figures
            failed = True
            rows.append(row(part, "", "", "error", None, note=f"{type(err).__name__}: {err}".splitlines()[0]))
        seconds[part] = round(time.perf_counter() - start, 1)
        print(f"gpu_check: {part} done in {seconds[part]} s", flush=True)

    header = (
        f"GPU check on {device_name(device)} ({args.device}{', smoke sizes' if args.smoke else ''}), "
        f"torch {torch.__version__}; ratios against the part's baseline (fused AdamW or AdamW)"
    )
    table = markdown(rows, header)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.md").write_text(table)
    record = {
        "device": device_name(device),
        "torch": torch.__version__,
        "smoke": args.smoke,
        "plan": asdict(plan),
        "seconds": seconds,
        "rows": rows,
    }
    (args.out / "gpu_check.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out / 'gpu_check.md'} and gpu_check.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
