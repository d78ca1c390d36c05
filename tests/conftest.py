"""Shared fixtures. Tests never reach a hub, and never write MLflow state outside their tmp dir.

The fixtures shared by several test modules live in `tests/fixtures/` (pytest plugins, loaded here); test
modules never import each other or those modules: they ask for fixtures by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from training.config import DataConfig, repo_root  # noqa: E402  (after the offline switches)

# Generated-input tests (hypothesis, schemathesis) draw the same examples on every run and keep no example
# database, so CI is deterministic; no per-example deadline (a torch call's first run is slow). Each test sets
# its own max_examples.
settings.register_profile("tweetguard", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tweetguard")

# Imported after the offline switches too (they build tokenizers and models).
pytest_plugins = [
    "tests.fixtures.tiny",
    "tests.fixtures.stores",
    "tests.fixtures.servers",
    "tests.fixtures.toy",
    "tests.fixtures.processes",
]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared datasets directory, found as training finds it (`DataConfig.root`: env TWEETGUARD_DATA_ROOT,
    else `training.config.DEFAULT_DATA_ROOT`), a relative path taken from the repository root (where `make test`
    runs). May not exist: tests that need it skip or fail as they say."""
    root = Path(DataConfig().root)
    return root if root.is_absolute() else repo_root() / root


@pytest.fixture(scope="session", autouse=True)
def _export_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The onnxruntime path caches exported graphs (keyed by the model files' hash): one cache for the session,
    # never the user's ~/.cache.
    os.environ["TWEETGUARD_CACHE_DIR"] = str(tmp_path_factory.mktemp("export-cache"))


@pytest.fixture(autouse=True)
def _stores_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's default store is ./mlflow.db and BentoML's ~/bentoml: a test that forgets to pass its own must
    # touch neither the repo nor the user's store, and never see another test's models.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
