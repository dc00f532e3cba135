"""A toy recipe with a config tree shaped like the real ones, for the sweep tests."""

import textwrap

TOY_RECIPE = textwrap.dedent(
    """
    from dataclasses import dataclass, field
    from pathlib import Path
    from typing import Any

    import hydra

    from alphaadam.runs import new_result, run_dir_for, write_result

    RECIPE = "toy"


    @dataclass
    class ToySchema:
        experiment: str = "default"
        seed: int = 0
        steps: int = 10
        log_every: int = 1
        crash_at_start: bool = False
        run: dict[str, Any] = field(default_factory=dict)
        optimizer: dict[str, Any] = field(default_factory=dict)
        task: Any = None


    SCHEMA = ToySchema


    def train(cfg):
        if cfg.get("crash_at_start"):  # dies before it writes result.json
            raise RuntimeError("could not start")
        run_dir = run_dir_for(cfg)
        identity = {"optimizer": cfg.optimizer.name, "lr": cfg.optimizer.lr, "seed": cfg.seed}
        result = new_result("toy", cfg.experiment, run_dir.name, identity, cfg.steps)
        write_result(run_dir, result)
        print("training", run_dir.name)
        if cfg.optimizer.lr > 0.0025:
            write_result(run_dir, {**result, "status": "failed", "error": "lr too large"})
            raise RuntimeError("lr too large")
        write_result(run_dir, {**result, "status": "completed"})


    @hydra.main(config_path=str(Path(__file__).parents[1] / "configs"), config_name="toy", version_base=None)
    def main(cfg):
        train(cfg)


    if __name__ == "__main__":
        main()
    """
)


def make_tree(tmp_path):

    configs = tmp_path / "configs"
    files = {
        "toy.yaml": """
            defaults:
              - optimizer: adamw
              - task: null
              - _self_
              - experiment: null
            experiment: default
            seed: 0
            steps: 10
            log_every: 1
            run:
              root: RUNROOT
              label: ${optimizer.name}-lr${optimizer.lr}-s${seed}
              exclude: [log_every]
              dir: null
            hydra:
              output_subdir: null
              run: {dir: .}
            """,
        "optimizer/adamw.yaml": "name: adamw\nlr: 1.0e-3\n",
        "optimizer/alphaadam.yaml": "name: alphaadam\nlr: 1.0e-3\n",
        "task/rte.yaml": "name: rte\n",
        "task/mrpc.yaml": "name: mrpc\n",
        "experiment/study.yaml": "# @package _global_\nexperiment: study\nsteps: 50\n",
        "sweep/study.yaml": """
            recipe: toy
            experiment: study
            optimizers: [adamw, alphaadam]
            lr:
              default: [1.0e-4, 3.0e-4]
              alphaadam: [1.0e-3, 2.0e-3, 3.0e-3]
            tasks: [rte, mrpc]
            seeds: [0, 1]
            gpus_per_job: 1
            gpu_hours_per_job: 0.5
            """,
    }
    for name, text in files.items():
        path = configs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace("RUNROOT", str(tmp_path / "runs")))
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "toy.py").write_text(TOY_RECIPE)
    return tmp_path
