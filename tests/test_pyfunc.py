"""The registered model as an MLflow Model (issue 15): MLflow's loaders score what the Predictor scores, the
threshold params move flags, MLflow's own predict entry point runs the logged input example, and model references
resolve to the artifact directory for new (MLflow Model) and old (plain directory) versions alike.

Real MLflow on a sqlite store, the tiny random model, `env_manager="local"` (no environment is built).
"""

from __future__ import annotations

import json
import os

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils import mlflow_tags
from packaging.requirements import Requirement

from serving.artifact import CARD_FILE, ArtifactError
from serving.policies import POLICIES, output_columns, threshold_param
from serving.predictor import Predictor
from training.cli import main
from training.registry.pyfunc import EXAMPLE_TEXTS, pip_requirements, register_pyfunc
from training.tracking.refs import resolve_model_ref
from training.tracking.runs import Run
from training.tracking.versions import MODEL_VERSIONS_TAG, logged_model_id, set_alias


def frame(expected: list[dict], policies: tuple[str, ...]) -> pd.DataFrame:
    """Predictor results laid out as the MLflow Model's output."""
    return pd.DataFrame([[r[key][p] for p in policies for key in ("scores", "flags", "actions")] for r in expected],
                        columns=output_columns(policies))


def assert_same(out: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(out.columns) == list(expected.columns) and len(out) == len(expected)
    for column in expected.columns:
        if column.endswith("_probability"):
            np.testing.assert_allclose(out[column].to_numpy(float), expected[column].to_numpy(float), atol=1e-6)
        else:
            assert out[column].tolist() == expected[column].tolist(), column


def test_pyfunc_scores_what_the_predictor_scores(tmp_path, tiny_artifact, mlflow_uri, register_pyfunc_dir,
                                                 mixed_texts):
    version = register_pyfunc_dir(tiny_artifact, mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/tweetguard/{version}")
    predictor = Predictor.load(tiny_artifact)
    expected = frame(predictor.predict(mixed_texts), predictor.policies)
    # Not a vacuous comparison: the tiny model's texts raise flags and reach both tiers.
    assert {True, False} <= set(expected.filter(like="_flagged").to_numpy().ravel())
    assert {"none", "review", "remove"} <= set(expected.filter(like="_action").to_numpy().ravel())
    out = model.predict(pd.DataFrame({"id": range(len(mixed_texts)), "text": mixed_texts}))  # extra columns: ignored
    assert list(out.columns) == output_columns(POLICIES)
    assert_same(out, expected)
    # A Series named `text` is the same input; the unwrapped model also takes a plain list.
    assert_same(model.predict(pd.Series(mixed_texts, name="text")), expected)
    assert_same(model.unwrap_python_model().predict(None, mixed_texts), expected)
    # MLflow's schema check (before the model) refuses a bare list, naming the column it wants.
    with pytest.raises(MlflowException, match="missing inputs \\['text'\\]"):
        model.predict(mixed_texts)
    # The table `tweetguard predict` writes from the same version: same columns, same order, same values.
    texts = [t for t in mixed_texts if t.strip()]  # (tweetguard predict refuses an empty text as a bad row)
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    assert main(["predict", "--model", f"models:/tweetguard/{version}", "--input", str(src), "--output", str(dst)]) == 0
    written = pd.read_json(dst, lines=True)
    assert list(written.columns) == ["text", *output_columns(POLICIES)]
    assert_same(written[output_columns(POLICIES)], model.predict(pd.DataFrame({"text": texts})))
    # The signature: the documented input, the `tweetguard predict` columns, one threshold param per policy.
    meta = model.metadata
    assert meta.get_input_schema().input_names() == ["text"]
    assert meta.get_output_schema().input_names() == output_columns(POLICIES)
    assert [(p.name, p.default) for p in meta.get_params_schema().params] == [(threshold_param(p), None)
                                                                             for p in POLICIES]
    # The environment: pyproject's serve extra, pinned torch included, and MLflow's own pin.
    with open(mlflow.pyfunc.get_model_dependencies(f"models:/tweetguard/{version}")) as f:
        requirements = [Requirement(line) for line in f.read().split()]
    assert requirements == [Requirement(r) for r in [f"mlflow=={mlflow.__version__}", *pip_requirements()]]
    assert Requirement("torch==2.13.0") in requirements


def test_threshold_params_move_only_their_policys_flags(tiny_artifact, mlflow_uri, register_pyfunc_dir, mixed_texts):
    model = mlflow.pyfunc.load_model(f"models:/tweetguard/{register_pyfunc_dir(tiny_artifact, mlflow_uri)}")
    df = pd.DataFrame({"text": mixed_texts})
    card = model.predict(df)
    violence = card["violence_probability"]
    t = float(violence.median())  # between the texts' scores: half of them flip to flagged
    moved = model.predict(df, params={"violence_threshold": t, "abusive_threshold": 1.0})
    assert moved["violence_flagged"].tolist() == (violence >= t).tolist() != card["violence_flagged"].tolist()
    assert card["abusive_flagged"].any() and not moved["abusive_flagged"].any()
    unchanged = [c for c in card.columns if c not in ("violence_flagged", "abusive_flagged")]
    pd.testing.assert_frame_equal(moved[unchanged], card[unchanged])  # scores, other flags and actions keep the card's
    predictor = Predictor.load(tiny_artifact)
    expected = predictor.predict(mixed_texts, thresholds={"violence": t, "abusive": 1.0})
    assert_same(moved, frame(expected, predictor.policies))
    with pytest.raises(MlflowException, match="violence_threshold"):
        model.predict(df, params={"violence_threshold": "high"})


def test_mlflow_models_predict_runs_the_input_example(tmp_path, tiny_artifact, mlflow_uri, register_pyfunc_dir):
    uri = f"models:/tweetguard/{register_pyfunc_dir(tiny_artifact, mlflow_uri)}"
    example = mlflow.models.Model.load(uri).load_input_example(mlflow.artifacts.download_artifacts(uri))
    assert example["text"].tolist() == EXAMPLE_TEXTS
    out = tmp_path / "predictions.json"
    mlflow.models.predict(uri, input_data=example, env_manager="local", output_path=str(out))
    rows = json.loads(out.read_text())["predictions"]
    predictor = Predictor.load(tiny_artifact)
    assert_same(pd.DataFrame(rows), frame(predictor.predict(EXAMPLE_TEXTS), predictor.policies))


def test_references_resolve_to_the_artifact_for_new_and_old_versions(tmp_path, tiny_artifact, mlflow_uri, register_dir,
                                                                     dir_digest, monkeypatch):
    # Registered into the store it is given while the environment names another one (config tracking.uri beside
    # MLFLOW_TRACKING_URI), and the training run stays open: the fluent state is put back afterwards.
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    run = Run.start(mlflow_uri, "tweetguard", "train", {}, system_metrics=False)
    new = register_pyfunc(tiny_artifact, "tweetguard", run_id=run.run_id, tracking_uri=mlflow_uri)
    client = MlflowClient(mlflow_uri)
    assert client.get_run(run.run_id).info.status == "RUNNING" and mlflow.active_run() is None
    assert os.environ["MLFLOW_TRACKING_URI"] == elsewhere and mlflow.get_tracking_uri() == elsewhere
    run.end()
    old = register_dir(tiny_artifact, mlflow_uri)
    set_alias("tweetguard", "champion", new, mlflow_uri)
    # The new version: run_id set, its source the logged model of that run, which names the version back.
    mv = client.get_model_version("tweetguard", new)
    model_id = mv.source.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    assert mv.run_id == run.run_id and logged.source_run_id == run.run_id and logged.name == "model"
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "tweetguard", "version": int(new)}]
    assert MODEL_VERSIONS_TAG == mlflow_tags.MLFLOW_MODEL_VERSIONS  # our spelling of MLflow's (internal) constant
    assert logged_model_id("tweetguard", new, mlflow_uri) == model_id
    assert logged_model_id("tweetguard", old, mlflow_uri) is None  # a plain directory is no logged model
    digest = dir_digest(tiny_artifact)
    refs = [f"models:/tweetguard/{new}", "models:/tweetguard@champion", f"runs:/{run.run_id}/model",
            f"models:/tweetguard/{old}", mlflow.artifacts.download_artifacts(  # a local MLflow Model directory
                logged.artifact_location, dst_path=str(tmp_path / "local"), tracking_uri=mlflow_uri)]
    for i, ref in enumerate(refs):
        path = resolve_model_ref(ref, tracking_uri=mlflow_uri, dst_path=tmp_path / f"dl{i}")
        assert (path / CARD_FILE).is_file() and dir_digest(path) == digest, ref  # the artifact, byte for byte
    # An MLflow Model that is not ours is refused with the reason.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n", encoding="utf-8")
    with pytest.raises(ArtifactError, match="names no python_function artifact 'model'"):
        resolve_model_ref(foreign)


def test_an_old_plain_version_is_registered_again_as_pyfunc(v1_artifact, mlflow_uri, register_dir, dir_digest,
                                                           mixed_texts):
    from training.registry.pyfunc import _main

    old = register_dir(v1_artifact, mlflow_uri)  # a version as registered before issue 15: plain files, bert type
    with pytest.raises(MlflowException):
        mlflow.pyfunc.load_model(f"models:/tweetguard/{old}")
    old_dir = resolve_model_ref(f"models:/tweetguard/{old}", tracking_uri=mlflow_uri)
    before = dir_digest(old_dir)
    assert _main(["reregister", f"models:/tweetguard/{old}", "--tracking-uri", mlflow_uri]) == 0
    assert dir_digest(old_dir) == before  # the old version's files are only read
    new = str(int(old) + 1)
    version = MlflowClient(mlflow_uri).get_model_version("tweetguard", new)
    assert version.tags["reregistered_from"] == f"models:/tweetguard/{old}" and "Model card" in version.description
    predictor = Predictor.load(v1_artifact)
    out = mlflow.pyfunc.load_model(f"models:/tweetguard/{new}").predict(pd.DataFrame({"text": mixed_texts}))
    assert_same(out, frame(predictor.predict(mixed_texts), predictor.policies))
    # Saved again by this code: the head is now HF remote code; the card is the old one, unchanged.
    new_dir = resolve_model_ref(f"models:/tweetguard/{new}", tracking_uri=mlflow_uri)
    assert json.loads((new_dir / "config.json").read_text())["model_type"] == "tweetguard_bert"
    assert (new_dir / "tweetguard_bert.py").is_file()
    assert json.loads((new_dir / CARD_FILE).read_text()) == json.loads((v1_artifact / CARD_FILE).read_text())


@pytest.mark.integration  # a real `mlflow models serve` process
def test_mlflow_models_serve_answers_invocations(tmp_path, tiny_artifact, mlflow_server, register_pyfunc_dir,
                                                  mixed_texts):
    """On a real `mlflow server`: the registered version served by `mlflow models serve --env-manager local`
    answers /invocations with the Predictor's numbers, and its threshold params move the flags."""
    import sys
    import time

    import httpx

    from training.release.package import free_port, start_server, stop_server

    version = register_pyfunc_dir(tiny_artifact, mlflow_server)
    port, log, bin_dir = free_port(), tmp_path / "models-serve.log", os.path.dirname(sys.executable)
    cmd = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", f"models:/tweetguard/{version}",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    # As from an activated venv: MLflow execs `uvicorn` from PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    proc = start_server("", port=port, log_path=log, env=env, command=cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        body = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in mixed_texts]}}
        r = httpx.post(url + "/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text
        predictor = Predictor.load(tiny_artifact)
        assert_same(pd.DataFrame(r.json()["predictions"]), frame(predictor.predict(mixed_texts), predictor.policies))
        r = httpx.post(url + "/invocations", json={**body, "params": {threshold_param("violence"): 0.0}}, timeout=60)
        assert all(row["violence_flagged"] for row in r.json()["predictions"])  # every probability is >= 0
    finally:
        stop_server(proc)
