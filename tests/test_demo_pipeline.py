"""`make demo`'s pipeline, shortened: a real inline sweep of the tiny GPT, then collect, table, figures."""

from alphaadam.cli import main
from alphaadam.paths import CONFIG_DIR, RECIPES_DIR


def test_demo_pipeline_end_to_end(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    dirs = ["--config-dir", str(CONFIG_DIR), "--recipes-dir", str(RECIPES_DIR)]
    study = [
        "experiment=demo",
        "launcher=inline",
        "sweep.optimizers=[adamw,alphaadam]",
        "sweep.lr=[3.0e-3]",
        "sweep.seeds=[0,1]",
        "trainer.max_steps=20",
        "trainer.eval_every=10",
        f"run.root={runs}",
    ]
    assert main(["sweep", *study, *dirs]) == 0
    assert "[sweep] 4/4 done, 0 failed" in capsys.readouterr().err
    assert main(["sweep", *study, *dirs]) == 0  # a second sweep has nothing left to run
    assert "; 0 to run" in capsys.readouterr().out

    spec = ["demo", "--spec-dir", str(CONFIG_DIR / "report"), "--runs", str(runs), "--out", str(out)]
    assert main(["collect", "--runs", str(runs), "--out", str(out / "index")]) == 0
    assert main(["tables", *spec]) == 0
    table = (out / "demo.md").read_text()
    assert "| AdamW + AM + Dynamic |" in table and "(n=2)" in table
    assert "| AdamW + SM | — |" in table  # not in this shortened study
    assert main(["figures", *spec, "--no-bench"]) == 0
    assert (out / "demo_alpha_training.png").stat().st_size > 10_000
