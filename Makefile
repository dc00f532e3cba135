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

.PHONY: setup test lint bench gpu-check tables figures demo reproduce-gpt2 reproduce-ablation reproduce-glue

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

# One CUDA GPU, about 8 minutes, nothing downloaded (needs a CUDA build of torch: TORCH=... above).
# Refuses in one line without a GPU. Table: results/gpu_check/gpu_check.md (docs/gpu_check.md).
gpu-check: $(STAMP)
	$(OFFLINE) $(BIN)/python scripts/gpu_check.py

# Paper tables and figures (every spec of suite "paper" in configs/report/) from whatever results
# exist under $(RUNS); written under results/paper/. Cells without a result read "—".
tables: $(STAMP)
	$(BIN)/alphaadam collect --runs $(RUNS)
	$(BIN)/alphaadam tables --runs $(RUNS) --out results/paper

figures: $(STAMP)
	$(BIN)/alphaadam figures --runs $(RUNS) --out results/paper

# ---- The paper's studies: sweep specs in configs/sweep/paper/, run by `alphaadam sweep` ---------------
# On a GPU node: jobs share the node's GPUs (launcher gpu_pool). A finished run is skipped and an
# interrupted one resumed, so the same command continues a partial study. SWEEP adds arguments, e.g.
# SWEEP=--dry-run, SWEEP="sweep.lr=[3.0e-4,6.0e-4,1.2e-3]", SWEEP="sweep.gpus_per_job=8" (DDP), or
# SWEEP="launcher=slurm launcher.submit=true" (then run `make tables figures` when the jobs are done).
# GPT-2 data first: $(BIN)/python scripts/prepare_openwebtext.py --out data/openwebtext
SIZE ?= 125m
SWEEP ?=

reproduce-gpt2: $(STAMP)
	$(BIN)/python -m alphaadam.preflight pretrain_gpt experiment=paper/gpt2_pretrain model=gpt2_$(SIZE)
	$(BIN)/alphaadam sweep experiment=paper/gpt2_pretrain model=gpt2_$(SIZE) $(SWEEP)
	$(MAKE) tables figures

reproduce-ablation: $(STAMP)
	$(BIN)/python -m alphaadam.preflight pretrain_gpt experiment=paper/ablation_gpt2
	$(BIN)/alphaadam sweep experiment=paper/ablation_gpt2 $(SWEEP)
	$(MAKE) tables figures

# Table 1: RoBERTa-base on GLUE, 6 optimizers x 7 tasks x 5 learning rates x 3 seeds (630 runs). The
# preflight checks every configuration, the GPU, the model and each task's data (fetched into the
# Hugging Face cache once when the hub is reachable; model.path=DIR / data.path=DIR for local copies)
# before any job starts. DRY_RUN=1 prints the plan instead and checks only the configs (no GPU needed).
# e.g. make reproduce-glue SWEEP="sweep.seeds=[0] sweep.tasks=[glue/rte,glue/mrpc]"
DRY_RUN ?=
GLUE_STUDY = experiment=paper/glue_roberta $(SWEEP) $(if $(DRY_RUN),--dry-run)

reproduce-glue: $(STAMP)
	$(BIN)/python -m alphaadam.preflight --sweep $(GLUE_STUDY)
	$(BIN)/alphaadam sweep $(GLUE_STUDY)
	$(if $(DRY_RUN),@echo "DRY_RUN: nothing ran; no tables made",$(MAKE) tables figures)

# ---- The README's first command: a real small study on CPU, its table and figures in results/demo/ ---
# One process runs the 24 tiny runs in turn (one thread is fastest for a model this small).
demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/alphaadam sweep experiment=demo launcher=inline
	$(BIN)/alphaadam collect --runs results/demo/runs --out results/demo/index
	$(BIN)/alphaadam tables demo
	$(BIN)/alphaadam figures demo --no-bench
	@cat results/demo/demo.md
