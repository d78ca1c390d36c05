"""`train.init_from` (training.fit.init_from): a run starts from a trained model's weights and source terms, refuses a
model that does not fit its config, records where it started, and resumes from its own checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.policies import POLICIES
from training.config import ConfigError, load_config
from training.fit.command import HISTORY_FILE
from training.fit.source_terms import BEST_SOURCE_TERMS_FILE, SourceTerms
from training.pipeline.train import train

# lr > 0 is the config's rule; at 1e-30 an AdamW step moves no float32 weight of the tiny model: the run's artifact
# is the model it started from, as it was loaded.
STILL = ["train.max_steps=1", "train.lr=1e-30", "train.source_terms_lr=1e-30"]
TEXTS = ["you are a stupid idiot", "go home", "@user i will find you and hurt you, shut up!!", "love", "no"]


def _logits(model_dir: Path) -> torch.Tensor:
    """Plain logits [len(TEXTS), P] of a model directory on a fixed batch."""
    from transformers import AutoTokenizer

    from serving.modeling import load_model

    batch = AutoTokenizer.from_pretrained(model_dir)(TEXTS, padding=True, truncation=True, max_length=32,
                                                      return_tensors="pt")
    with torch.no_grad():
        return load_model(model_dir)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _with_terms(logits: torch.Tensor, terms_file: Path) -> dict[str, torch.Tensor]:
    """{source: the loss's view of the logits for a row of that source}: z * exp(a) + b for the pairs it labels."""
    terms = json.loads(terms_file.read_text())["terms"]
    out = {}
    for source, pairs in terms.items():
        z = logits.clone()
        for j, policy in enumerate(POLICIES):
            if policy in pairs:
                z[:, j] = z[:, j] * np.exp(pairs[policy]["log_scale"]) + pairs[policy]["offset"]
        out[source] = z
    return out


def _assert_same_model(a: Path, b: Path) -> None:
    za, zb = _logits(a), _logits(b)
    assert torch.allclose(za, zb, atol=1e-6, rtol=0), (za - zb).abs().max()
    ta, tb = (_with_terms(z, d.parent / BEST_SOURCE_TERMS_FILE) for z, d in ((za, a), (zb, b)))
    assert ta.keys() == tb.keys() == {"tiny_full", "tiny_violence"}
    for source in ta:
        assert torch.allclose(ta[source], tb[source], atol=1e-6, rtol=0), (source, (ta[source] - tb[source]).abs().max())


@pytest.fixture
def trained(tmp_path, mlflow_uri, write_tiny_train_config):
    """(config path, TrainResult) of a tiny run with affine source terms, registered as tweetguard v1 @champion."""
    config = write_tiny_train_config(tmp_path, max_steps=4, source_terms="affine", source_terms_lr=0.5)
    return config, train(load_config(config, ["run_name=a"]), progress_bar=False)


def test_a_run_from_an_artifact_dir_starts_at_its_weights_and_source_terms(trained, mlflow_uri):
    from mlflow import MlflowClient

    config, a = trained
    terms = json.loads((a.artifact_dir.parent / BEST_SOURCE_TERMS_FILE).read_text())
    assert terms["mode"] == "affine" and terms["step"] >= 1
    assert any(abs(p["offset"]) > 1e-3 for pairs in terms["terms"].values() for p in pairs.values())  # learned
    b = train(load_config(config, ["run_name=b", f"train.init_from={a.artifact_dir}", *STILL]), progress_bar=False)
    _assert_same_model(a.artifact_dir, b.artifact_dir)
    run = MlflowClient(mlflow_uri).get_run(b.run_id).data
    assert run.params["train.init_from"] == str(a.artifact_dir)
    assert run.params["derived.init_from"] == str(a.artifact_dir.resolve())
    assert run.params["derived.init_from_run_id"] == run.tags["init_from.run_id"] == a.run_id
    assert run.params["derived.init_from_terms"] == str(a.artifact_dir.parent / BEST_SOURCE_TERMS_FILE)
    assert run.tags["init_from"] == str(a.artifact_dir.resolve()) and len(run.tags["init_from.sha256"]) == 64
    # A fresh optimizer and schedule: warmup and decay span this run's one step.
    assert run.params["train.max_steps"] == "1"


def test_a_run_from_a_registered_alias_loads_that_version_and_its_run_terms(trained, mlflow_uri):
    from mlflow import MlflowClient

    config, a = trained
    assert a.model_version == "1"
    b = train(load_config(config, ["run_name=b", "train.init_from=models:/tweetguard@champion", *STILL]),
              progress_bar=False)
    _assert_same_model(a.artifact_dir, b.artifact_dir)
    run = MlflowClient(mlflow_uri).get_run(b.run_id).data
    assert run.params["derived.init_from"] == run.tags["init_from"] == "models:/tweetguard/1"  # the alias, resolved
    assert run.tags["init_from.ref"] == "models:/tweetguard@champion"
    assert run.params["derived.init_from_version"] == run.tags["init_from.version"] == "1"
    assert run.tags["init_from.name"] == "tweetguard" and run.tags["init_from.run_id"] == a.run_id
    # The registered model's directory holds no terms: they came from the run that trained it.
    assert run.params["derived.init_from_terms"] == f"runs:/{a.run_id}/{BEST_SOURCE_TERMS_FILE}"


def test_saved_terms_load_for_the_sources_they_know_and_new_sources_start_at_the_identity():
    labels = np.array([[1, 0, -1], [0, 1, -1], [1, -1, 0], [0, -1, 1]], dtype=np.int8)
    old = SourceTerms(["a", "a", "b", "b"], labels, list(POLICIES), "affine")
    with torch.no_grad():
        old.offset.normal_()
        old.log_scale.normal_()
    saved = {"mode": "affine", "step": 3, "terms": {s: {p: {"offset": v["offset"], "log_scale": float(np.log(v["scale"]))}
                                                         for p, v in pairs.items()} for s, pairs in old.report().items()}}
    same = SourceTerms(["a", "a", "b", "b"], labels, list(POLICIES), "affine")
    assert same.load_saved(saved) == {"loaded": ["a", "b"], "new": [], "unused": []}
    for x, y in zip(old.effective(), same.effective()):
        assert torch.allclose(x[old.labelled], y[old.labelled], atol=1e-5)
    grown = np.concatenate([labels, [[1, 0, 1]]]).astype(np.int8)
    mixed = SourceTerms(["a", "a", "c", "c", "c"], grown, list(POLICIES), "affine")  # b gone, c new
    assert mixed.load_saved(saved) == {"loaded": ["a"], "new": ["c"], "unused": ["b"]}
    c = mixed.names.index("c")
    assert torch.all(mixed.offset[c] == 0) and torch.all(mixed.log_scale[c] == 0)
    a = mixed.names.index("a")
    assert mixed.offset[a, 0].item() == pytest.approx(saved["terms"]["a"]["abusive"]["offset"])


@pytest.mark.parametrize("override, mismatch", [
    ("model.head=cls", "head is 'mean', model.head is 'cls'"),
    ("model.max_length=16", "max_length is 32, model.max_length is 16"),
    ("policies", "policies"),
    ("tfidf", "TF-IDF"),
    ("shape", "num_hidden_layers 2 vs 3"),
    ("missing", "no such directory"),
])
def test_a_model_that_does_not_fit_the_config_is_refused_naming_the_key(
        tmp_path, mlflow_uri, write_tiny_train_config, make_tiny_artifact, make_tiny_backbone, override, mismatch):
    config = write_tiny_train_config(tmp_path, max_steps=1)
    model = make_tiny_artifact(tmp_path / "init")  # the tiny backbone's shape, max_length 32, mean head
    overrides = [override] if "=" in override else []
    card_path = model / "policy_card.json"
    card = json.loads(card_path.read_text())
    if override == "policies":
        card["policies"] = card["policies"][::-1]
    elif override == "tfidf":
        card["config"] = {"model": {"kind": "tfidf"}}
        (model / "config.json").unlink()
    elif override == "shape":
        overrides = [f"model.backbone={make_tiny_backbone(tmp_path / 'deeper', layers=3)}"]
    elif override == "missing":
        model = tmp_path / "nowhere"
    card_path.write_text(json.dumps(card))
    cfg = load_config(config, [f"train.init_from={model}", *overrides])
    with pytest.raises(ConfigError, match=r"train\.init_from=") as refused:
        train(cfg, progress_bar=False)
    assert mismatch in str(refused.value)
    assert not (tmp_path / "cache").exists()  # refused before any data was prepared


def test_the_tfidf_baseline_refuses_init_from():
    with pytest.raises(ConfigError, match=r"train\.init_from=.*tfidf"):
        train(load_config(None, ["model.kind=tfidf", "train.init_from=models:/tweetguard@champion"]))


def test_resume_of_an_init_from_run_takes_its_checkpoint(tmp_path, mlflow_uri, write_tiny_train_config,
                                                         make_tiny_artifact):
    config = write_tiny_train_config(tmp_path, max_steps=4, checkpoint_every_steps=2)
    model = make_tiny_artifact(tmp_path / "init")
    overrides = ["run_name=r", f"train.init_from={model}"]
    first = train(load_config(config, overrides), progress_bar=False)
    (tmp_path / "runs" / "r" / HISTORY_FILE).unlink()  # as if killed after its step-2 checkpoint
    shutil.rmtree(model)  # the checkpoint wins: the reference is not read again
    resumed = train(load_config(config, overrides), resume=True, progress_bar=False)
    assert resumed.steps == 4
    from mlflow import MlflowClient

    run = MlflowClient(mlflow_uri).get_run(resumed.run_id)
    assert resumed.run_id == first.run_id and run.data.tags["init_from"] == str(model.resolve())
