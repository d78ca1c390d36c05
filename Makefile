# The two commands of the README: `make run` (the main job) and `make test` (the whole test suite).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# mkdocs-material 9.8 and its plugins print a banner about MkDocs 2 on every build: quiet it.
export NO_MKDOCS_2_WARNING := 1
export DISABLE_MKDOCS_2_WARNING := true

.PHONY: install label-studio run baseline bench test test-fast docs docs-serve clean

# torch is pinned in the same resolution as everything else: left to pip it picks a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt "torch==2.13.0" -e ".[dev,spark,docs]"
	touch $@

install: $(BIN)/.installed

# The Label Studio server the tests start (tests/test_label_studio.py), in its own environment: its pins
# (Django, its own label-studio-sdk) are not the project's; the project needs only the SDK.
LABEL_VENV := .venv-label
$(LABEL_VENV)/.installed: constraints-label.txt
	test -x $(LABEL_VENV)/bin/python || $(PY) -m venv $(LABEL_VENV)
	$(LABEL_VENV)/bin/pip install -q --upgrade pip
	$(LABEL_VENV)/bin/pip install -q -c constraints-label.txt "label-studio==1.23.2"
	touch $@

label-studio: $(LABEL_VENV)/.installed

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

# The whole suite: unit + integration, the docs site built with --strict (tests/test_docs.py) and the import
# layering contract (tests/test_architecture.py). This is what CI runs.
test: install label-studio
	$(BIN)/python -m pytest --durations=25

# The edit-test loop: everything except the `integration`-marked tests (real servers, real backbone, slow paths).
test-fast: install
	$(BIN)/python -m pytest -m "not integration and not benchmark" --durations=10

# The documentation site into site/ (mkdocs.yml; the CLI and HTTP references are generated at build time).
docs: install
	$(BIN)/mkdocs build --strict

docs-serve: install
	$(BIN)/mkdocs serve

clean:
	rm -rf data/cache runs reports mlflow.db mlruns mlartifacts site
