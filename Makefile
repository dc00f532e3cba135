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

.PHONY: setup test lint bench tables figures reproduce-gpt2 reproduce-ablation

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

# ---- GPT-2 pretraining on OpenWebText (paper Figure 2 and Table 3): GPU node, prepared data ----------
# One run per optimizer, one after the other, each on all GPUs of the node (torchrun). A finished run
# is skipped and an interrupted one resumed, so the same command continues a partial reproduction.
# Data first: $(BIN)/python scripts/prepare_openwebtext.py --out data/openwebtext
SIZE ?= 125m
GPT2_OPTIMIZERS ?= adamw cadamw alphaadam
ABLATION_OPTIMIZERS ?= adamw adamw_sm adamw_am alphaadam
NGPU ?= $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
GPT_LAUNCH = $(if $(filter-out 0,$(NGPU)),$(BIN)/torchrun --standalone --nproc_per_node=$(NGPU),$(BIN)/python)

reproduce-gpt2: $(STAMP)
	$(BIN)/python -m alphaadam.train.preflight pretrain_gpt experiment=gpt2_figure2 model=gpt2_$(SIZE)
	for opt in $(GPT2_OPTIMIZERS); do \
		$(GPT_LAUNCH) recipes/pretrain_gpt.py experiment=gpt2_figure2 model=gpt2_$(SIZE) optimizer=$$opt || exit $$?; \
	done

reproduce-ablation: $(STAMP)
	$(BIN)/python -m alphaadam.train.preflight pretrain_gpt experiment=gpt2_table3
	for opt in $(ABLATION_OPTIMIZERS); do \
		$(GPT_LAUNCH) recipes/pretrain_gpt.py experiment=gpt2_table3 optimizer=$$opt || exit $$?; \
	done
