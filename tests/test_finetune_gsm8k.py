"""The GSM8K recipe on a CPU: a tiny Llama memorises lm-eval's GSM8K rows and lm-eval scores it 1.0;
micro-batching does not change the losses; a run killed mid-way resumes to the same losses."""

import json
import os
import subprocess
import sys

import pytest
import torch

import recipes.finetune_gsm8k as recipe
from alphaadam.evals import gsm8k as gsm8k_eval
from alphaadam.models.hf import ModelUnavailable, load_causal_lm
from alphaadam.runs import read_result, run_dir_for
from alphaadam.train.config import compose
from alphaadam.train.state import load_checkpoint
from tests.pretrain_helpers import REPO
from tests.run_helpers import interrupt_at, records

# A short run of the tiny Llama: a few steps, one row scored with few generated tokens.
SHORT = (
    "trainer.epochs=6",
    "trainer.batch_size=4",
    "trainer.log_every=1",
    "trainer.progress=none",
    "eval.limit=1",
    "eval.max_gen_toks=4",
    "trainer.mask_stats_every=0",
)


def config(root, *overrides):
    return compose("finetune_gsm8k", ["experiment=gsm8k_tiny", f"run.root={root}", *overrides])


def test_tiny_llama_memorises_the_rows_and_scores_one(tmp_path, capsys):
    cfg = config(tmp_path, "trainer.progress=none")
    result = recipe.train(cfg)
    assert result["status"] == "completed" and result["step"] == 120
    assert result["metrics"]["final"]["accuracy"] == 1.0
    assert result["metrics"]["final"]["train_loss"] < 0.2
    run = run_dir_for(cfg)
    assert (run / "model" / "config.json").is_file() and (run / "model" / "tokenizer.json").is_file()
    lm_eval = json.loads((run / "gsm8k_eval" / "results.json").read_text())
    assert lm_eval["results"]["gsm8k_alphaadam"]["exact_match,strict-match"] == 1.0
    assert len((run / "gsm8k_eval" / "samples.jsonl").read_text().splitlines()) == 16  # 8 rows x 2 filters
    # The saved folder scores the same from the command line.
    capsys.readouterr()
    args = ["--checkpoint", str(run / "model"), "--data", "embedded", "--limit", "2", "--max-gen-toks", "96"]
    gsm8k_eval.main([*args, "--out", str(tmp_path / "cli"), "--device", "cpu"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == 1.0


def test_micro_batching_does_not_change_the_losses(tmp_path):
    whole = config(tmp_path / "a", *SHORT, "trainer.micro_batch_size=4")
    parts = config(tmp_path / "b", *SHORT, "trainer.micro_batch_size=2")
    ones = config(tmp_path / "c", *SHORT, "trainer.micro_batch_size=1")
    for cfg in (whole, parts, ones):
        recipe.train(cfg)
    losses = [torch.tensor([r["train_loss"] for r in records(cfg)]) for cfg in (whole, parts, ones)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses[2], losses[0], rtol=1e-5, atol=1e-6)


def test_interrupted_run_resumes_to_the_same_losses(tmp_path, monkeypatch):
    overrides = (*SHORT, "trainer.checkpoint_every=2", "trainer.keep_checkpoint=true")
    uninterrupted = config(tmp_path / "a", *overrides)
    recipe.train(uninterrupted)
    resumed = config(tmp_path / "b", *overrides)
    monkeypatch.setattr(recipe, "divergence", interrupt_at(recipe, 4))
    with pytest.raises(KeyboardInterrupt):
        recipe.train(resumed)
    assert max(r["step"] for r in records(resumed)) == 3  # logged past the checkpoint at step 2
    monkeypatch.setattr(recipe, "divergence", recipe.divergence.real)
    assert recipe.train(resumed)["status"] == "completed"
    assert records(resumed) == records(uninterrupted)
    assert read_result(run_dir_for(resumed))["metrics"] == read_result(run_dir_for(uninterrupted))["metrics"]


def test_data_options_are_this_recipes_and_the_tiny_pair_learns_in_a_minute():
    from alphaadam.errors import ConfigError
    from alphaadam.train.config import validate

    quick = compose("finetune_gsm8k", ["model=tiny_llama", "data=embedded"])
    assert quick.data.source == "embedded" and quick.experiment == "finetune_gsm8k"
    assert (quick.optimizer.lr, quick.trainer.epochs) == (3e-3, 120)  # model_data/tiny_llama_embedded
    tiny = compose("finetune_gsm8k", ["experiment=gsm8k_tiny"])
    assert {k: v for k, v in tiny.items() if k != "experiment"} == {
        k: v for k, v in quick.items() if k != "experiment"
    }
    paper = compose("finetune_gsm8k", ["model=tiny_llama"])  # the pair's settings only with both
    assert (paper.data.source, paper.optimizer.lr, paper.trainer.epochs) == ("hub", 5e-5, 3)
    smoke = compose("finetune_gsm8k", ["model=tiny_llama", "data.source=embedded"])
    assert run_dir_for(smoke) != run_dir_for(paper)  # other rows: never skipped as the same run
    assert compose("pretrain_gpt", ["data=embedded"]).data.name == "embedded"  # GPT's tokens there
    with pytest.raises(ConfigError, match="for another recipe; choose one of: embedded, hub$"):
        validate(compose("finetune_gsm8k", ["data=openwebtext"]), recipe.SCHEMA)


def test_gated_model_error_names_the_licence_and_login(monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise OSError("You are trying to access a gated repo.\nMake sure to have access to it")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(
        ModelUnavailable, match=r"gated repository: accept its licence.*huggingface-cli login"
    ):
        load_causal_lm("meta-llama/Llama-2-7b-hf")


def test_bad_protocol_is_refused_in_one_line(tmp_path):
    with pytest.raises(recipe.ConfigError, match="eval.protocol='v02' is not one of lm_eval, v03"):
        recipe.train(config(tmp_path, "eval.protocol=v02"))


def torchrun(script: str, root, *args) -> subprocess.CompletedProcess:
    """``script args...`` under torchrun, 2 CPU processes (FSDP2, gloo), the tiny run under ``root``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*launcher, script, *args, "experiment=gsm8k_tiny", f"run.root={root}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )


def assert_two_processes_match_one(root_one, root_two, overrides) -> None:
    """The losses of the two-process run under ``root_two`` are those of one process (run here)
    with the same settings: 2 sequences on each process = 4 sequences on one."""
    single = config(root_one, *overrides)
    recipe.train(single)
    a, b = records(single), records(config(root_two, *overrides))
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)


def test_two_fsdp2_processes_match_one(tmp_path):
    """torchrun with 2 CPU processes (FSDP2, gloo) and AdamW = 1 process; AlphaAdam's case is the
    resume test's uninterrupted run."""
    overrides = (*SHORT, "optimizer=adamw", "trainer.checkpoint_every=0", "trainer.micro_batch_size=2")
    run = torchrun("recipes/finetune_gsm8k.py", tmp_path / "two", *overrides)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("completed 12 steps") == 1  # rank 0 prints, the other is silent
    assert_two_processes_match_one(tmp_path / "one", tmp_path / "two", overrides)
    assert "accuracy" in read_result(run_dir_for(config(tmp_path / "two", *overrides)))["metrics"]["final"]


def test_two_fsdp2_processes_resume_from_their_shards(tmp_path):
    """Two AlphaAdam processes interrupted after the checkpoint at step 2 resume from its shards
    (checkpoint.dcp) to the losses of an uninterrupted two-process run, which matches one process
    and ends with a checkpoint of its last step as a one-process run does."""
    overrides = (
        *SHORT,
        "optimizer=alphaadam",
        "trainer.epochs=3",
        "trainer.checkpoint_every=2",
        "trainer.micro_batch_size=2",
    )
    run = torchrun("recipes/finetune_gsm8k.py", tmp_path / "a", *overrides, "trainer.keep_checkpoint=true")
    assert run.returncode == 0, run.stderr[-3000:]
    assert_two_processes_match_one(tmp_path / "one", tmp_path / "a", overrides)
    final = run_dir_for(config(tmp_path / "a", *overrides)) / "checkpoint.dcp"
    assert sorted(p.name for p in final.iterdir()) == ["LATEST", "step-6"]
    session = load_checkpoint(final / "step-6" / "session.pt")  # committed after the scoring
    assert session["step"] == 6 and "accuracy" in session["tracker"]["final"]
    interrupted = torchrun("tests/gsm8k_interrupted.py", tmp_path / "b", "4", *overrides)
    assert interrupted.returncode != 0 and "interrupted; run the same command again" in interrupted.stderr
    resumed = config(tmp_path / "b", *overrides)
    checkpoint = run_dir_for(resumed) / "checkpoint.dcp"
    assert (checkpoint / "LATEST").read_text() == "step-2"
    assert {p.name for p in (checkpoint / "step-2").iterdir()} >= {".metadata", "session.pt"}
    assert not (run_dir_for(resumed) / "checkpoint.pt").exists()
    assert max(r["step"] for r in records(resumed)) == 3  # logged past the checkpoint at step 2
    run = torchrun("recipes/finetune_gsm8k.py", tmp_path / "b", *overrides)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming at step 2" in run.stdout
    uninterrupted = config(tmp_path / "a", *overrides)
    assert records(resumed) == records(uninterrupted)
    assert read_result(run_dir_for(resumed))["metrics"] == read_result(run_dir_for(uninterrupted))["metrics"]
    assert not checkpoint.exists()  # the run ended: its checkpoint is deleted
