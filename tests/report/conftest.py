"""Fixtures of the report tests: run directories written in tmp_path (see report_fixtures.py)."""

from pathlib import Path

import pytest

from tests.report.report_fixtures import ablation_runs, ablation_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ablation(tmp_path):
    """(spec path, runs root) of the Table-3-style fixture with every kind of cell."""
    runs = ablation_runs(tmp_path / "runs")
    return ablation_spec(tmp_path), runs


@pytest.fixture
def in_repo(monkeypatch):
    """Run from the repository root, where specs name results/reference/paper_numbers.yaml."""
    monkeypatch.chdir(REPO)
    return REPO
