"""Sharded checkpoints (checkpoint.dcp/, alphaadam/train/sharded_checkpoint.py) in one process:
LATEST names a complete checkpoint whenever a save is killed, a round trip restores the model and
optimizer exactly, and another number of processes is refused in one line."""

import pytest
import torch

from alphaadam.errors import UserError
from alphaadam.train import sharded_checkpoint
from alphaadam.train.distributed import Distributed
from alphaadam.train.sharded_checkpoint import commit, latest, load, refuse_other_layout, save, stage
from alphaadam.train.state import load_checkpoint

ONE = Distributed(torch.device("cpu"))
TWO = Distributed(torch.device("cpu"), rank=1, local_rank=1, world_size=2)
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # one process, by design


def trained():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_a_save_killed_before_latest_moves_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained()
    path = tmp_path / "checkpoint.dcp"
    assert latest(path) is None
    save(path, model, optimizer, {"step": 2}, ONE)
    assert latest(path) == path / "step-2"

    def killed(*args):
        raise KeyboardInterrupt

    staged = stage(path, model, optimizer, 4, ONE)  # every shard of step 4 written...
    monkeypatch.setattr(sharded_checkpoint, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):  # ...and its session.pt, then the kill
        commit(staged, optimizer, {"step": 4}, ONE.world_size)
    assert latest(path) == path / "step-2"
    assert load_checkpoint(path / "step-2" / "session.pt")["step"] == 2
    monkeypatch.undo()
    save(path, model, optimizer, {"step": 6}, ONE)  # the next save clears what the kill left
    assert sorted(p.name for p in path.iterdir()) == ["LATEST", "step-6"]
    save(path, model, optimizer, {"step": 6}, ONE)  # the same step again: never over the one in force
    assert sorted(p.name for p in path.iterdir()) == ["LATEST", "step-6-again"]


def test_round_trip_restores_model_and_optimizer(tmp_path):
    model, optimizer = trained()
    save(tmp_path, model, optimizer, {"step": 1, "tokens": 8}, ONE)
    fresh = torch.nn.Linear(4, 3)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.5)
    fresh(torch.randn(2, 4)).sum().backward()
    fresh_optimizer.step()
    assert load(tmp_path, fresh, fresh_optimizer, ONE) == {"step": 1, "tokens": 8}
    torch.testing.assert_close(fresh.state_dict(), model.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(fresh_optimizer.state_dict(), optimizer.state_dict(), rtol=0, atol=0)


def test_another_number_of_processes_is_refused_in_one_line(tmp_path):
    model, optimizer = trained()
    commit(stage(tmp_path, model, optimizer, 2, ONE), optimizer, {"step": 2}, world_size=2)
    refused = r"written by 2 processes and this run has 1: resume it with 2 processes, or delete"
    with pytest.raises(UserError, match=refused) as err:
        load(tmp_path, model, optimizer, ONE)
    assert "\n" not in str(err.value)


def test_the_other_kind_of_checkpoint_is_refused_in_one_line(tmp_path):
    """Two FSDP2 processes' checkpoint.dcp found by one process, or one process's checkpoint.pt
    found by two: refused, never ignored by a run that would start over beside it."""
    model, optimizer = trained()
    commit(stage(tmp_path / "checkpoint.dcp", model, optimizer, 2, ONE), optimizer, {"step": 2}, 2)
    with pytest.raises(UserError, match=r"checkpoint.dcp was written by 2 processes and this run has 1"):
        refuse_other_layout(tmp_path / "checkpoint.pt", sharded=False, dist=ONE)
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"checkpoint.pt was written by 1 process and this run has 2"):
        refuse_other_layout(other / "checkpoint.pt", sharded=True, dist=TWO)
    refuse_other_layout(other / "checkpoint.pt", sharded=False, dist=ONE)  # its own kind: no objection
