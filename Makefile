# The two commands of the README:
#   make demo   set up and run the main job end to end on the embedded default (CPU, MiniLM, local files)
#   make test   set up and run the tests (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DISTIL_DATA_DIR ?= $(abspath ../shared/data)
export DISTIL_CACHE ?= $(HOME)/.cache/distil-jobs
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/torch_extensions
export DS_ACCELERATOR ?= cpu
# The venv's tools (distil-jobs, torchrun, weed, hadolint, shellcheck) come first for every recipe.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo test test-fast test-server lint bench clean

setup: $(VENV)/.installed

# torch first and pinned: on these machines 2.13.0 is a local CPU wheel; any looser request pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[models,train,slurm,s3,eval,senses,dev]"
	touch $@

demo: setup
	bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check distil_jobs tests bench

test-fast: setup
	$(BIN)/python -m pytest -q -m "not server and not slow" --durations=15

test-server: setup
	$(BIN)/python -m pytest -q -m "server or slow" --durations=15

test: lint test-fast test-server

bench: setup
	$(BIN)/python bench/precompute.py

clean:
	rm -rf out .pytest_cache .ruff_cache
