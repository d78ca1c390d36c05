"""Shared fixtures. Tests never reach a hub, and never write MLflow state outside their tmp dir."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny import make_tiny_artifact  # noqa: E402  (after the offline switches)


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


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Creating an MLflow sqlite store runs its schema migrations (~10 s here); do it once per session.
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    cwd = os.getcwd()
    os.chdir(folder)  # the Default experiment's artifact root is ./mlruns at creation: never the repo
    try:
        MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    finally:
        os.chdir(cwd)
    return folder / "mlflow.db"


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _mlflow_template_db: Path) -> str:
    """A fresh, empty MLflow sqlite store in this test's tmp dir (also set as MLFLOW_TRACKING_URI)."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(_mlflow_template_db, db)
    with sqlite3.connect(db) as con:  # this test's Default experiment keeps its artifacts in this test's dir
        root = str(tmp_path / "mlruns" / "0")
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", [root])
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random mean-head artifact (thresholds 0.5, temperature 2). Read-only: copy it to modify it."""
    return make_tiny_artifact(tmp_path_factory.mktemp("tiny") / "model", head="mean")
