# The two commands of the README: `make run` (the main job) and `make test` (the whole test suite).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test clean

# torch is pinned in the same resolution as everything else: left to pip it picks a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt "torch==2.13.0" -e ".[dev]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/tweetguard data --config $(CONFIG)

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf data/cache runs reports mlflow.db mlruns mlartifacts
