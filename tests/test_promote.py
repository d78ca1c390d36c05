"""The promotion gate against a registry: refusal of a worse model, promotion, force, rollback, model card.

Champion: the TF-IDF baseline fit on the tiny sources (it learns their word rules, so PR-AUC is high).
Deliberately worse candidate: a tiny *random* transformer (PR-AUC near the base rate). Both are real models
scored through their real scorers; the registry is a tmp sqlite store (and a real `mlflow server` below).
"""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from training.config import load_config
from training.data.prepare import prepare
from training.fit.baseline import train_baseline
from training.registry.promote import promote, rollback
from training.tracking.versions import HISTORY_TAG

FAST = ["evaluation.bootstrap_samples=200"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, make_tiny_artifact, write_tiny_train_config) -> dict:
    """Tiny data config, its prepared splits, a good baseline dir and a random transformer dir."""
    root = tmp_path_factory.mktemp("promote")
    config = write_tiny_train_config(root)
    cfg = load_config(config, [*FAST, "baseline.min_df=1"])
    prepared = prepare(cfg.data)
    dataset = prepared.dataset
    good, _ = train_baseline(cfg, prepared, root / "good")
    worse = make_tiny_artifact(root / "worse")
    return {"config": config, "cfg": cfg, "dataset": dataset, "good": good, "worse": worse}


def _promote(world, ref, uri, **kw):
    return promote(ref, world["cfg"], validation=world["dataset"]["validation"], tracking_uri=uri, **kw)


def test_worse_candidate_is_refused_and_recorded(tiny_world, mlflow_uri, register_dir):
    client = MlflowClient(mlflow_uri)
    assert register_dir(tiny_world["good"], mlflow_uri) == "1"
    first = _promote(tiny_world, "models:/tweetguard/1", mlflow_uri)
    assert first.outcome == "promoted" and first.champion_before is None
    assert register_dir(tiny_world["worse"], mlflow_uri) == "2"
    d = promote("models:/tweetguard/2", tiny_world["cfg"], validation=tiny_world["dataset"]["validation"],
                test=tiny_world["dataset"]["test"], tracking_uri=mlflow_uri)
    assert d.outcome == "refused" and not d.promoted
    assert any(r.startswith("abusive: validation PR-AUC") for r in d.reasons), d.reasons
    assert "champion (test)" in d.table and "abusive/pr_auc" in d.table
    aliases = {k: str(v) for k, v in client.get_registered_model("tweetguard").aliases.items()}
    assert aliases == {"champion": "1", "challenger": "2"}
    tags = client.get_model_version("tweetguard", "2").tags
    assert tags["promotion.decision"] == "refused" and tags["promotion.champion_before"] == "1"
    evidence = json.loads(tags["promotion.evidence"])
    assert evidence["abusive"]["ci95"][1] < 0 < evidence["abusive"]["champion"] - 0.5


def test_force_needs_reason_then_promotes_and_rollback_restores(tiny_world, mlflow_uri, register_dir):
    client = MlflowClient(mlflow_uri)
    register_dir(tiny_world["good"], mlflow_uri)
    _promote(tiny_world, "models:/tweetguard/1", mlflow_uri)
    register_dir(tiny_world["worse"], mlflow_uri)
    with pytest.raises(ValueError, match="--reason"):
        _promote(tiny_world, "models:/tweetguard/2", mlflow_uri, force=True)
    d = _promote(tiny_world, "models:/tweetguard/2", mlflow_uri, force=True, reason="incident 42 hotfix")
    assert d.outcome == "forced"
    model = client.get_registered_model("tweetguard")
    assert str(model.aliases["champion"]) == "2" and json.loads(model.tags[HISTORY_TAG]) == ["1"]
    assert "incident 42 hotfix" in client.get_model_version("tweetguard", "2").tags["promotion.reason"]
    back = rollback("tweetguard", tracking_uri=mlflow_uri, reason="bad flags in prod")
    assert back.outcome == "rolled_back" and back.candidate == "1"
    model = client.get_registered_model("tweetguard")
    assert str(model.aliases["champion"]) == "1" and json.loads(model.tags[HISTORY_TAG]) == []
    assert client.get_model_version("tweetguard", "1").tags["promotion.decision"] == "rolled_back"
    with pytest.raises(ValueError, match="no previous champion"):
        rollback("tweetguard", tracking_uri=mlflow_uri)


def test_equal_candidate_is_promoted(tiny_world, mlflow_uri, register_dir):
    register_dir(tiny_world["good"], mlflow_uri)
    _promote(tiny_world, "models:/tweetguard/1", mlflow_uri)
    register_dir(tiny_world["good"], mlflow_uri)  # same model retrained: no drop at all
    d = _promote(tiny_world, "models:/tweetguard/2", mlflow_uri)
    assert d.outcome == "promoted" and d.champion_before == "1"
    assert MlflowClient(mlflow_uri).get_registered_model("tweetguard").aliases["champion"] == 2
    assert _promote(tiny_world, "models:/tweetguard@champion", mlflow_uri).outcome == "unchanged"


def test_cli_refusal_exit_codes(tiny_world, mlflow_uri, capsys, register_dir):
    from training.cli import main

    register_dir(tiny_world["good"], mlflow_uri)
    register_dir(tiny_world["worse"], mlflow_uri)
    args = ["promote", "--config", str(tiny_world["config"]), "--tracking-uri", mlflow_uri, "--no-test", *FAST]
    assert main([*args[:1], "--candidate", "models:/tweetguard/1", *args[1:]]) == 0
    assert main([*args[:1], "--candidate", "models:/tweetguard/2", *args[1:]]) == 0  # refusal is not an error
    assert "REFUSED" in capsys.readouterr().out
    assert main([*args[:1], "--candidate", "models:/tweetguard/2", "--strict", *args[1:]]) == 1
    assert main([*args[:1], "--candidate", str(tiny_world["worse"]), *args[1:]]) == 2  # not a registered version


def test_model_card_attached_to_version(tiny_world, mlflow_uri, register_dir):
    from training.evaluation.cards import CARD_MD, attach_model_card

    version = register_dir(tiny_world["good"], mlflow_uri)
    text = attach_model_card("tweetguard", version, tiny_world["good"], tracking_uri=mlflow_uri)
    client = MlflowClient(mlflow_uri)
    mv = client.get_model_version("tweetguard", version)
    assert mv.description == text
    for needle in ("Intended use", "English only", "Violence has thin", "| tiny_full | CC0-1.0 |", "abusive"):
        assert needle in text, needle
    assert [a.path for a in client.list_artifacts(mv.run_id, f"model_card/v{version}")] == [
        f"model_card/v{version}/{CARD_MD}"]


@pytest.mark.integration
def test_gate_against_real_mlflow_server(tiny_world, mlflow_server, tmp_path, register_dir):
    register_dir(tiny_world["good"], mlflow_server)
    register_dir(tiny_world["worse"], mlflow_server)
    assert _promote(tiny_world, "models:/tweetguard/1", mlflow_server).outcome == "promoted"
    assert _promote(tiny_world, "models:/tweetguard/2", mlflow_server).outcome == "refused"
    assert _promote(tiny_world, "models:/tweetguard/2", mlflow_server, force=True, reason="test").promoted
    assert rollback("tweetguard", tracking_uri=mlflow_server).candidate == "1"
    assert str(MlflowClient(mlflow_server).get_registered_model("tweetguard").aliases["champion"]) == "1"
    assert list((tmp_path / "server-artifacts").rglob("tfidf_logreg.joblib"))  # stored by the server
    # evaluate resolves the alias through the server too, and links its run to the version there.
    from training.evaluation.evaluate import evaluate

    result = evaluate("models:/tweetguard@champion", tiny_world["cfg"], split="validation",
                      data=tiny_world["dataset"]["validation"], out_dir=tmp_path / "rep", tracking_uri=mlflow_server)
    assert result.kind == "tfidf" and result.identity.version == "1"
    client = MlflowClient(mlflow_server)
    assert client.get_run(result.run_id).data.tags["model_version"] == "1"
    assert client.get_model_version("tweetguard", "1").tags["evaluation.validation.run_id"] == result.run_id

