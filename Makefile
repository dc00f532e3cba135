# Set-up is automatic: every target that runs Python first makes .venv/ (once) with torch and the package.
# GPU users pick their torch build, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= results/runs
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

.PHONY: setup test lint bench tables figures

setup: $(STAMP)

# Reinstalls only when pyproject.toml changes; a second `make test` reuses the environment.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(OFFLINE) $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python scripts/bench_optim.py

# Paper tables and figures (every spec of suite "paper" in configs/report/) from whatever results
# exist under $(RUNS); written under results/paper/. Cells without a result read "—".
tables: $(STAMP)
	$(BIN)/alphaadam collect --runs $(RUNS)
	$(BIN)/alphaadam tables --runs $(RUNS) --out results/paper

figures: $(STAMP)
	$(BIN)/alphaadam figures --runs $(RUNS) --out results/paper
