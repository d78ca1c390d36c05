"""MLflow run contents and registration: embedded sqlite store, a real `mlflow server`, an unreachable one."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from mlflow import MlflowClient

from serving.artifact import CARD_FILE, file_sha256, read_card
from serving.policies import POLICIES
from training.config import load_config
from training.pipeline.train import train
from training.evaluation.hubcard import EVAL_METRICS, HUB_README
from training.evaluation.reference import compute_reference, fetch_reference
from training.tracking.refs import resolve_model_ref
from training.tracking.runs import TrackingError

STEPS = 6


def check_run_contents(client: MlflowClient, run_id: str, uri: str, tmp_path: Path) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.max_steps"] == str(STEPS) and params["model.head"] == "mean"
    assert params["tracking.registered_model"] == "tweetguard" and "derived.pos_weight" in params
    assert all(len(v) <= 500 for v in params.values())
    tags = run.data.tags
    assert {"git_commit", "backbone", "config_file", "stop_reason"} <= tags.keys()
    # MLflow's own source tags too, so its UI and search see where the run came from.
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == tags["git_commit"].removesuffix("-dirty")
    assert tags["config_file"].endswith("tiny.yaml")
    losses = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in losses] == list(range(1, STEPS + 1))
    for policy in POLICIES:
        assert client.get_metric_history(run_id, f"val_{policy}/pr_auc"), policy
    assert client.get_metric_history(run_id, "val_mean_pr_auc")[-1].step == STEPS
    # Dataset lineage: the prepared splits and each source, with their content hashes.
    names = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert {"tweetguard-train", "tweetguard-validation", "source-tiny_full", "source-tiny_violence"} <= names.keys()
    src = {t.key: t.value for t in names["source-tiny_full"].tags}
    assert len(src["content_hash"]) == 64 and names["source-tiny_full"].dataset.digest == src["content_hash"][:32]
    assert "data" in {a.path for a in client.list_artifacts(run_id)}
    # The model is the run's logged MLflow Model `model` (not a copy in the run's artifacts); runs:/<run_id>/model
    # names it, and resolves to the artifact directory inside it.
    (logged,) = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    local = resolve_model_ref(f"runs:/{run_id}/model", tracking_uri=uri, dst_path=tmp_path / "run-dl")
    assert logged.name == "model" and (local.parents[1] / "MLmodel").is_file()
    assert {"config.json", "model.safetensors", CARD_FILE} <= {p.name for p in local.iterdir()}
    # Registered, first version is @champion, and the registry reference downloads a valid artifact.
    version = client.get_model_version_by_alias("tweetguard", "champion")
    assert version.run_id == run_id and str(version.version) == "1" and version.source == f"models:/{logged.model_id}"
    local = resolve_model_ref("models:/tweetguard@champion", tracking_uri=uri, dst_path=tmp_path / "dl")
    card = read_card(local)
    assert card.mlflow_run_id == run_id and set(card.validation_metrics) >= {"mean_pr_auc"}
    # MLflow 3's model view: the card's validation metrics are the logged model's, on the validation dataset input.
    linked = {m.key: m for m in client.get_logged_model(logged.model_id).metrics}
    expected = {f"final_val_{k}": v for k, v in card.validation_metrics.items() if not k.startswith("train_kept/")}
    assert {k: m.value for k, m in linked.items()} == pytest.approx(expected) and "final_val_mean_pr_auc" in linked
    assert {(m.dataset_name, m.dataset_digest, m.step, m.run_id) for m in linked.values()} == {
        ("tweetguard-validation", names["tweetguard-validation"].dataset.digest, STEPS, run_id)}
    assert run.data.metrics["final_val_mean_pr_auc"] == linked["final_val_mean_pr_auc"].value
    # The Hugging Face model card travels in the model directory; ModelCard.load reads it.
    hub = ModelCard.load(local / HUB_README).data
    assert hub.license == "other" and hub.pipeline_tag == "text-classification"
    assert {(r.metric_config, r.metric_type): r.metric_value for r in hub.eval_results} == {
        (p, m): card.validation_metrics[f"{p}/{m}"] for p in POLICIES for m in EVAL_METRICS
        if f"{p}/{m}" in card.validation_metrics}


def test_sqlite_run_contents_and_registration(tmp_path, mlflow_uri, write_tiny_train_config):
    config = write_tiny_train_config(tmp_path, max_steps=STEPS, eval_every_steps=3)
    first = train(load_config(config, ["run_name=first"]), config_file=str(config), progress_bar=False)
    client = MlflowClient(mlflow_uri)
    check_run_contents(client, first.run_id, mlflow_uri, tmp_path)
    assert first.model_version == "1"
    check_reference(first.run_id, load_config(config), mlflow_uri, tmp_path)
    # A second training is a new version; @champion stays where it was (promotion is evaluation's job).
    second = train(load_config(config, ["run_name=second"]), config_file=str(config), progress_bar=False)
    assert second.model_version == "2"
    assert str(client.get_model_version_by_alias("tweetguard", "champion").version) == "1"
    assert "first" in {r.info.run_name for r in client.search_runs([first_exp(client)])}
    # Artifacts beside the database (the test's tmp dir), never in the working directory's ./mlruns.
    assert len(list((tmp_path / "mlruns").rglob(CARD_FILE))) == 2


def check_reference(run_id: str, cfg, uri: str, tmp_path: Path) -> None:
    """Registration kept the validation scores it calibrated on beside the model: the scores the registered model
    gives validation through the Predictor (what `tweetguard monitor` would compute for a version without them)."""
    model_dir = resolve_model_ref("models:/tweetguard/1", tracking_uri=uri, dst_path=tmp_path / "ref-dl")
    kept = fetch_reference(run_id, uri, tmp_path / "ref")
    assert kept is not None and kept.meta["source"] == "registration"
    assert kept.meta["card_sha256"] == file_sha256(model_dir / CARD_FILE)
    again = compute_reference(model_dir, cfg, tmp_path / "again.npz")
    assert kept.rows == again.rows == kept.meta["rows"] and kept.meta["dataset_hash"] == again.meta["dataset_hash"]
    np.testing.assert_allclose(kept.scores, again.scores, atol=1e-5)
    assert (kept.lengths == again.lengths).all()


def first_exp(client: MlflowClient) -> str:
    return client.get_experiment_by_name("tweetguard").experiment_id


def test_unreachable_server_fails_before_loading_anything(tmp_path, free_port):
    port = free_port()  # nothing listens here
    # data.root does not exist: reaching the data layer would raise FileNotFoundError instead.
    cfg = load_config(None, [f"tracking.uri=http://127.0.0.1:{port}", f"data.root={tmp_path / 'absent'}"])
    started = time.monotonic()
    with pytest.raises(TrackingError, match=rf"127\.0\.0\.1:{port} is unreachable"):
        train(cfg, progress_bar=False)
    assert time.monotonic() - started < 10


def test_cli_reports_unreachable_server(tmp_path, free_port):
    from training.cli import main

    assert main(["train", f"tracking.uri=http://127.0.0.1:{free_port()}"]) == 2


@pytest.mark.integration
def test_real_mlflow_server(tmp_path, mlflow_server, monkeypatch, write_tiny_train_config):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # env, not config: the documented switch
    config = write_tiny_train_config(tmp_path, max_steps=STEPS, eval_every_steps=3)
    result = train(load_config(config, ["run_name=served"]), config_file=str(config), progress_bar=False)
    client = MlflowClient(mlflow_server)
    check_run_contents(client, result.run_id, mlflow_server, tmp_path)
    # The artifacts went through the server into its artifact store, not into a local ./mlruns.
    stored = list((tmp_path / "server-artifacts").rglob(CARD_FILE))
    assert len(stored) == 1 and not (tmp_path / "mlruns").exists()


def test_tfidf_baseline_is_its_own_run_and_registered_model(tmp_path, mlflow_uri, write_tiny_train_config):
    config = write_tiny_train_config(tmp_path)
    cfg = load_config(config, ["model.kind=tfidf", "tracking.registered_model=tweetguard-tfidf", "run_name=tfidf"])
    result = train(cfg, config_file=str(config))
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "tfidf"
    assert "validation/mean_pr_auc" in run.data.metrics and "test/mean_pr_auc" in run.data.metrics
    version = client.get_model_version("tweetguard-tfidf", result.model_version)
    assert version.run_id == result.run_id
    # never a champion; @challenger marks its newest version (what `make baseline` evaluates)
    assert client.get_registered_model("tweetguard-tfidf").aliases == {"challenger": int(version.version)}
    local = resolve_model_ref(f"models:/tweetguard-tfidf/{result.model_version}", tracking_uri=mlflow_uri,
                              dst_path=tmp_path / "dl")
    assert read_card(local).mlflow_run_id == result.run_id
