# The two commands of the README: `make run` (the main job) and `make test` (the whole test suite).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run baseline bench test clean

# torch is pinned in the same resolution as everything else: left to pip it picks a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt "torch==2.13.0" -e ".[dev,spark]"
	touch $@

install: $(BIN)/.installed

MODEL := models:/tweetguard

# data -> train (registers a version: @challenger; the first is also @champion) -> evaluate on test ->
# promotion gate on validation (a refusal is reported, not an error) -> bento of @champion.
run: install
	$(BIN)/tweetguard data --config $(CONFIG)
	$(BIN)/tweetguard train --config $(CONFIG)
	$(BIN)/tweetguard evaluate --config $(CONFIG) --model $(MODEL)@challenger
	$(BIN)/tweetguard promote --config $(CONFIG) --candidate $(MODEL)@challenger
	$(BIN)/tweetguard package --model $(MODEL)@champion

# The classical yardstick, registered as tweetguard-tfidf (never a champion candidate).
baseline: install
	$(BIN)/tweetguard train --config configs/baseline.yaml
	$(BIN)/tweetguard evaluate --config configs/baseline.yaml --model models:/tweetguard-tfidf@challenger

# Speed, each in one run on this machine: inference (stock pipeline vs Predictor paths vs the served endpoint)
# on 2,000 real test tweets, then training (our loop vs a stock transformers.Trainer). Reports: reports/bench/.
bench: install
	$(BIN)/python -m benchmarks.inference --model $(MODEL)@champion --n 2000 --cache-repeat-rate 0.3 --out reports/bench
	$(BIN)/python -m benchmarks.train_speed --config $(CONFIG) --json reports/bench/train_speed.json

test: install
	$(BIN)/python -m pytest --durations=25

clean:
	rm -rf data/cache runs reports mlflow.db mlruns mlartifacts
