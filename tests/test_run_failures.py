"""What a run does with its own files gone bad, a full disk, and leftovers of a killed process:
every failure is recorded where `alphaadam status` and `--only-failed` see it, with one line that
names the file and the choice; nothing is restarted silently and no step is logged twice."""

import collections
import subprocess
import sys

import pytest

import recipes.pretrain_gpt as recipe
from alphaadam.runs import read_result, run_dir_for
from alphaadam.runs.files import UnreadableRunFile
from alphaadam.runs.result import ResultFileError
from alphaadam.sweep.job import Job
from tests.pretrain_helpers import REPO, gpt_config, quick_args
from tests.run_helpers import interrupt_at, records

CHECKPOINTED = ("trainer.max_steps=12", "trainer.checkpoint_every=4")


pytestmark = pytest.mark.usefixtures("quick_recipe_runs")


def interrupted(cfg, monkeypatch, step: int = 7):
    """Run ``cfg`` until a Ctrl-C at ``step``, as a user would stop it."""
    monkeypatch.setattr(recipe, "divergence", interrupt_at(recipe, step))
    with pytest.raises(KeyboardInterrupt):
        recipe.train(cfg)
    monkeypatch.setattr(recipe, "divergence", recipe.divergence.real)
    return run_dir_for(cfg)


@pytest.mark.parametrize(
    "damage, message",
    [
        ({"checkpoint.pt": b"\x00not a checkpoint"}, r"checkpoint .*checkpoint\.pt cannot be read"),
        (
            {"metrics.jsonl": b'{"step": 0}\n{"step": 1, oops\n{"step": 2}\n'},
            r"metrics\.jsonl: line 2 is not",
        ),
    ],
)
def test_an_unreadable_run_file_is_recorded_failed_with_its_name(
    tmp_path, data_dir, monkeypatch, damage, message
):
    cfg = gpt_config(tmp_path, data_dir, *CHECKPOINTED)
    run_dir = interrupted(cfg, monkeypatch)
    for name, data in damage.items():
        (run_dir / name).write_bytes(data)
    with pytest.raises(
        UnreadableRunFile, match=message + r".*restore it, or delete it to start the run over"
    ):
        recipe.train(cfg)
    result = read_result(run_dir)
    assert result["status"] == "failed" and "restore it, or delete it" in result["error"]
    job = Job("", (), run_dir)
    assert job.status() == "failed"  # what `alphaadam status` shows and `--only-failed` reruns


def test_an_unreadable_result_file_stops_the_run_with_one_line(tmp_path, data_dir, monkeypatch):
    cfg = gpt_config(tmp_path, data_dir, *CHECKPOINTED)
    run_dir = interrupted(cfg, monkeypatch)
    (run_dir / "result.json").write_text("{cut sho")
    with pytest.raises(
        ResultFileError, match=r"result\.json: not valid JSON.*restore it, or delete .* to run it again"
    ):
        recipe.train(cfg)
    assert Job("", (), run_dir).status() == "unreadable"
    run = subprocess.run(
        [sys.executable, "recipes/pretrain_gpt.py", *quick_args(tmp_path, data_dir, *CHECKPOINTED)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "result.json: not valid JSON" in run.stderr


def test_stale_temporaries_of_a_killed_write_are_removed_on_resume(tmp_path, data_dir, monkeypatch):
    cfg = gpt_config(tmp_path, data_dir, *CHECKPOINTED)
    run_dir = interrupted(cfg, monkeypatch)
    stale = run_dir / ".checkpoint.pt.4242.deadbeef.tmp"
    stale.write_bytes(b"\x00" * 1024)
    assert recipe.train(cfg)["status"] == "completed"
    assert not stale.exists() and not list(run_dir.glob(".*.tmp"))


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(tmp_path, data_dir, monkeypatch):
    cfg = gpt_config(tmp_path, data_dir, "trainer.max_steps=8", "trainer.checkpoint_every=0")
    interrupted(cfg, monkeypatch, step=5)
    assert recipe.train(cfg)["status"] == "completed"
    steps = collections.Counter(r["step"] for r in records(cfg))
    assert steps[0] == 1 and max(steps.values()) == 1
    clean = gpt_config(tmp_path / "clean", data_dir, "trainer.max_steps=8", "trainer.checkpoint_every=0")
    recipe.train(clean)
    assert records(cfg) == records(clean)


def test_a_full_disk_is_recorded_as_such(tmp_path, data_dir, monkeypatch):
    import alphaadam.runs.files as files

    def full_disk_save(obj, f):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(files.torch, "save", full_disk_save)
    monkeypatch.setattr(
        files.shutil, "disk_usage", lambda path: collections.namedtuple("U", "total used free")(1, 1, 0)
    )
    cfg = gpt_config(tmp_path, data_dir, *CHECKPOINTED)
    with pytest.raises(OSError, match="No space left on device"):
        recipe.train(cfg)
    result = read_result(run_dir_for(cfg))
    assert result["status"] == "failed" and "No space left on device" in result["error"]
    assert not list(run_dir_for(cfg).glob(".*.tmp"))
