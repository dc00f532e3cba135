"""Run directories written by hand (result.json + metrics.jsonl) for the report tests and the
example in docs/reports.md. Numbers are made up; only their shape follows alphaadam/runs/result.py.

    PYTHONPATH=. python tests/report/report_fixtures.py DIR   # writes the example runs under DIR
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

MASKED = ("adamw_sm", "adamw_am", "alphaadam", "cadamw")
FRACTIONS = ("0.2", "0.4", "0.6", "1.0")


def write_run(
    root: Path,
    *,
    optimizer: str,
    lr: float,
    seed: int,
    status: str = "completed",
    experiment: str = "fixture",
    recipe: str = "pretrain_gpt",
    final: float | None = None,
    steps: int = 50,
    extra_identity: dict | None = None,
    final_metrics: dict | None = None,
    best_metrics: dict | None = None,
    curve: bool = True,
) -> Path:
    """One run directory; for a completed GPT-style run ``final`` is its final val loss and the loss
    at fraction f of training is ``final + 0.5 * (1 - f)``."""
    identity = {"optimizer": optimizer, "lr": lr, "seed": seed, "model": "tiny", **(extra_identity or {})}
    config = {"recipe": recipe, "experiment": experiment, **identity}
    run_id = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = Path(root) / experiment.replace("/", "_") / f"{optimizer}-lr{lr:g}-s{seed}-{run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict = {}
    if final is not None:
        metrics = {
            "final": {"val_loss": final, "train_loss": final - 0.05},
            "best": {"val_loss": final},
            "at_fraction": {f: {"val_loss": round(final + 0.5 * (1 - float(f)), 6)} for f in FRACTIONS},
            "best_step": steps,
        }
    if final_metrics is not None:
        metrics.setdefault("final", {}).update(final_metrics)
    if best_metrics is not None:
        metrics.setdefault("best", {}).update(best_metrics)
    result = {
        "schema": 1,
        "status": status,
        "recipe": recipe,
        "experiment": experiment,
        "run_id": run_id,
        "identity": identity,
        "step": steps if status == "completed" else steps // 2,
        "total_steps": steps,
        "metrics": metrics,
        "timing": {"wall_s": 10.0, "step_time_s": 0.01 * (1.1 if optimizer in MASKED else 1.0)},
        "memory": {
            "peak_bytes": 2**28,
            "optimizer_state_bytes": 8 * 10**6,
            "optimizer_state_bytes_per_param": 8.0,
        },
        "versions": {"python": "3.11"},
        "git_sha": None,
        "error": None if status == "completed" else f"{status} at step {steps // 2}",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    if curve:
        lines = []
        end = steps if status == "completed" else steps // 2
        for step in range(0, end + 1, 5):
            base = (final if final is not None else 3.0) + 2.0 * (1 - step / steps)
            record = {"step": step, "lr": lr, "train_loss": base + 0.01 * seed, "time_s": 0.2 * step + seed}
            if step % 10 == 0:
                record["val_loss"] = base + 0.02
            if optimizer in MASKED and step % 10 == 0 and step > 0:
                record["mask_stats"] = [
                    {"name": f"h.{i}.weight", "alpha": 1.0 + 0.1 * i + step / 100, "density": 0.5 + 0.01 * i}
                    for i in range(6)
                ]
            lines.append(json.dumps(record))
        if status == "diverged":
            lines.append(json.dumps({"step": end + 1, "train_loss": "nan", "time_s": 0.2 * end}))
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def ablation_runs(root: Path) -> Path:
    """The Table-3-style fixture: every kind of cell.

    - adamw: lr 1e-3 (3 seeds) loses to lr 3e-3 (2 seeds); lr 1e-2 diverged -> n=2 cell
    - adamw_sm: every run diverged -> "div"
    - adamw_am: every run out of memory -> "oom"
    - alphaadam: lr 1e-3, seeds 0 and 1 completed, seed 2 diverged -> "(n=2, 1 div)"; lr 2e-3 ties on
      the mean with one seed (fewer seeds lose the tie); a failed and a running run are ignored;
      its 100 % value ties adamw's -> both bold
    - cadamw: only a failed run -> "—"
    - runs of another experiment and another recipe are not selected
    """
    for seed, final in enumerate((3.30, 3.32, 3.31)):
        write_run(root, optimizer="adamw", lr=1e-3, seed=seed, final=final)
    for seed, final in enumerate((3.20, 3.22)):
        write_run(root, optimizer="adamw", lr=3e-3, seed=seed, final=final)
    write_run(root, optimizer="adamw", lr=1e-2, seed=0, status="diverged")
    for lr, seed in ((1e-3, 0), (1e-3, 1), (3e-3, 0)):
        write_run(root, optimizer="adamw_sm", lr=lr, seed=seed, status="diverged")
    for seed in (0, 1):
        write_run(root, optimizer="adamw_am", lr=1e-3, seed=seed, status="oom", curve=False)
    for seed, final in enumerate((3.20, 3.22)):
        write_run(root, optimizer="alphaadam", lr=1e-3, seed=seed, final=final)
    write_run(root, optimizer="alphaadam", lr=1e-3, seed=2, status="diverged")
    write_run(root, optimizer="alphaadam", lr=2e-3, seed=0, final=3.21)
    write_run(root, optimizer="alphaadam", lr=3e-3, seed=0, status="failed", curve=False)
    write_run(root, optimizer="alphaadam", lr=3e-4, seed=0, status="running", final=2.0)
    write_run(root, optimizer="cadamw", lr=1e-3, seed=0, status="failed", curve=False)
    write_run(root, optimizer="alphaadam", lr=1e-3, seed=0, final=1.0, experiment="other")
    write_run(root, optimizer="alphaadam", lr=1e-3, seed=5, final=1.0, recipe="finetune_glue")
    return root


ABLATION_SPEC = """
title: "Fixture: validation loss"
runs: {recipe: pretrain_gpt, experiment: fixture}
rows:
  key: optimizer
  header: Method
  items:
    - {value: adamw, label: AdamW, paper: AdamW}
    - {value: adamw_sm, label: AdamW + SM, paper: AdamW + SM}
    - {value: adamw_am, label: AdamW + AM, paper: AdamW + AM}
    - {value: alphaadam, label: AdamW + AM + Dynamic, paper: AdamW + AM + Dynamic}
    - {value: cadamw, label: CAdamW}
columns:
  - {label: "20%", metric: metrics.at_fraction.0.2.val_loss, paper: step20}
  - {label: "100%", metric: metrics.at_fraction.1.0.val_loss, paper: step100}
averages:
  - {label: Avg, of: ["20%", "100%"], paper: avg}
values: {decimals: 3, higher_is_better: false}
selection: {metric: metrics.final.val_loss}
reference: {source: fixture.table3, file: REFERENCE, label: "fixture paper, Table 3"}
figures: {loss_curves: {y: [val_loss, train_loss]}, lr_sensitivity: true, alpha: true, resources: true}
"""

REFERENCE_YAML = """
fixture:
  table3:
    columns: [step20, step100, avg]
    rows:
      AdamW: [3.8, 3.2, 3.5]
      AdamW + SM: [3.85, 3.227, 3.5386]
      AdamW + AM + Dynamic: [3.658, 3.203, 3.431]
"""


def ablation_spec(tmp: Path) -> Path:
    """Spec and reference files for :func:`ablation_runs` under ``tmp``; returns the spec path."""
    reference = Path(tmp) / "reference.yaml"
    reference.write_text(REFERENCE_YAML)
    spec = Path(tmp) / "fixture_ablation.yaml"
    spec.write_text(ABLATION_SPEC.replace("REFERENCE", str(reference)))
    return spec


GLUE_SPEC = """
title: GLUE fixture
runs: {recipe: finetune_glue}
rows: {key: optimizer, items: [{value: adamw, label: AdamW}, {value: alphaadam, label: AlphaAdam}]}
columns:
  - {label: RTE, where: {task: [rte, glue/rte]}, metric: metrics.best.accuracy}
  - {label: MRPC, where: {task: [mrpc, glue/mrpc]}, metric: metrics.best.f1}
averages: [{label: Avg}]
values: {scale: 100, decimals: 2, higher_is_better: true}
"""

GLUE_RUNS = [  # optimizer, lr, seed, task, metrics.best
    ("adamw", 1e-5, 0, "rte", {"accuracy": 0.70}),
    ("adamw", 1e-5, 1, "rte", {"accuracy": 0.72}),
    ("adamw", 2e-5, 0, "rte", {"accuracy": 0.68}),
    ("adamw", 2e-5, 0, "glue/mrpc", {"f1": 0.88, "accuracy": 0.99}),  # the column shows F1
    ("adamw", 2e-5, 1, "glue/mrpc", {"f1": 0.90, "accuracy": 0.99}),
    ("alphaadam", 1e-5, 0, "rte", {"accuracy": 0.70}),
    ("alphaadam", 3e-5, 0, "mrpc", {"f1": 0.91}),
    ("alphaadam", 3e-5, 1, "mrpc", {"f1": 0.93}),
]


def glue_runs(root):
    for optimizer, lr, seed, task, best in GLUE_RUNS:
        extra = {"task": task}
        write_run(
            root,
            optimizer=optimizer,
            lr=lr,
            seed=seed,
            extra_identity=extra,
            best_metrics=best,
            recipe="finetune_glue",
        )
    return root


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "fixture_runs")
    ablation_runs(target / "runs")
    print(f"spec: {ablation_spec(target)}; runs: {target / 'runs'}")
