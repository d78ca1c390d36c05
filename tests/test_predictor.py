"""The Predictor contract on a tiny random BERT: order, batch invariance, calibration, flags, truncation,
artifact validation; plus one run over the real bundled backbone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.artifact import CARD_FILE, ArtifactError, Calibration, calibrate, read_card
from serving.policies import POLICIES
from serving.predictor import Predictor

# `mixed_texts` (tests/fixtures/tiny.py): mixed lengths (so sorting permutes them and batches need padding), raw
# tweet features, an empty string.


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


@pytest.fixture(scope="module")
def predictor(tiny_artifact: Path) -> Predictor:
    return Predictor.load(tiny_artifact, batch_size=3)


@pytest.fixture(scope="module")
def cls_artifact(tmp_path_factory, make_tiny_artifact) -> Path:
    return make_tiny_artifact(tmp_path_factory.mktemp("tiny-cls") / "model", head="cls", seed=1)


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "model"))


def _edit_card(model_dir: Path, edit) -> None:
    # Write the JSON directly: write_card refuses invalid cards, and old/foreign artifacts arrive as files.
    path = model_dir / CARD_FILE
    card = json.loads(path.read_text())
    edit(card)
    path.write_text(json.dumps(card))


# ---- loading -------------------------------------------------------------------------------------------------
def test_load_exposes_card_policies_and_max_length(predictor: Predictor, tiny_artifact: Path, tiny_spec):
    assert predictor.policies == POLICIES
    assert predictor.max_length == tiny_spec.max_length
    assert predictor.card == read_card(tiny_artifact)
    assert predictor.path == "onnxruntime"  # "auto", as in the service


def test_unknown_path_is_refused(tiny_artifact: Path):
    with pytest.raises(ValueError, match="path='onnx'.*reference"):
        Predictor.load(tiny_artifact, path="onnx")


def test_missing_card_is_refused(tiny_artifact: Path, tmp_path: Path):
    model_dir = _copy(tiny_artifact, tmp_path)
    (model_dir / CARD_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"{model_dir}.*no {CARD_FILE}"):
        Predictor.load(model_dir)


def test_wrong_policies_are_refused(tiny_artifact: Path, tmp_path: Path):
    model_dir = _copy(tiny_artifact, tmp_path)
    _edit_card(model_dir, lambda c: c["policies"][2].update(name="threat"))
    with pytest.raises(ArtifactError, match=r"policy_card.json: card policies .*'threat'.* do not match"):
        Predictor.load(model_dir)


def test_wrong_policy_order_is_refused(tiny_artifact: Path, tmp_path: Path):
    model_dir = _copy(tiny_artifact, tmp_path)
    _edit_card(model_dir, lambda c: c["policies"].reverse())
    with pytest.raises(ArtifactError, match="names and order"):
        Predictor.load(model_dir)


def test_wrong_preprocess_version_is_refused(tiny_artifact: Path, tmp_path: Path):
    model_dir = _copy(tiny_artifact, tmp_path)
    _edit_card(model_dir, lambda c: c.update(preprocess_version="0"))
    with pytest.raises(ArtifactError, match=r"policy_card.json: model trained with preprocessing v0"):
        Predictor.load(model_dir)


def test_weights_with_other_labels_are_refused(tiny_artifact: Path, tmp_path: Path):
    model_dir = _copy(tiny_artifact, tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    config["id2label"] = {"0": "harassment", "1": "abusive", "2": "violence"}
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"config.json: id2label \('harassment', 'abusive'"):
        Predictor.load(model_dir)


def test_max_length_beyond_position_embeddings_is_refused(tiny_artifact: Path, tmp_path: Path):
    model_dir = _copy(tiny_artifact, tmp_path)
    _edit_card(model_dir, lambda c: c.update(max_length=512))
    with pytest.raises(ArtifactError, match="max_length=512 exceeds .*max_position_embeddings=64"):
        Predictor.load(model_dir)


# ---- inputs --------------------------------------------------------------------------------------------------
def test_non_str_item_names_its_index(predictor: Predictor):
    with pytest.raises(TypeError, match=r"texts\[2\] is NoneType"):
        predictor.predict_proba(["a", "b", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is int"):
        predictor.predict([3])


def test_bare_string_is_refused(predictor: Predictor):
    with pytest.raises(TypeError, match="sequence of str"):
        predictor.logits("you are a stupid idiot")


def test_empty_input_and_empty_strings(predictor: Predictor):
    assert predictor.logits([]).shape == (0, len(POLICIES))
    assert predictor.predict([]) == []
    probs = predictor.predict_proba(["", " "])  # scored: callers decide what empty means
    assert probs.shape == (2, len(POLICIES)) and np.all((probs > 0) & (probs < 1))


# ---- order and batch invariance ------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["mean", "cls"])
def test_scores_do_not_depend_on_batch_mates_or_order(head, tiny_artifact, cls_artifact, mixed_texts):
    predictor = Predictor.load(tiny_artifact if head == "mean" else cls_artifact, batch_size=3, path="reference")
    alone = np.stack([predictor.logits([t])[0] for t in mixed_texts])  # [N, P], no padding at all
    # Texts must score differently, or a permutation bug would go unnoticed.
    assert len({tuple(np.round(row, 4)) for row in alone}) == len(mixed_texts)
    for batch_size in (2, 3, 64):
        predictor.batch_size = batch_size
        mixed = predictor.logits(mixed_texts)  # length-sorted, padded batches, returned in input order
        np.testing.assert_allclose(mixed, alone, rtol=0, atol=1e-5)
        reversed_ = predictor.logits(mixed_texts[::-1])
        np.testing.assert_allclose(reversed_[::-1], alone, rtol=0, atol=1e-5)


def test_text_is_normalized_before_scoring(predictor: Predictor):
    # normalize_tweet: mentions -> @user, URLs dropped, entities decoded, lowercased.
    a, b = predictor.logits(["@Bob YOU are &amp; https://x.co/1", "@user you are &"])
    np.testing.assert_allclose(a, b, atol=1e-6)


# ---- calibration and thresholds ------------------------------------------------------------------------------
def test_predict_proba_applies_card_temperature(predictor: Predictor, mixed_texts, tiny_spec):
    logits = predictor.logits(mixed_texts)
    expected = _sigmoid(logits / tiny_spec.temperature)
    np.testing.assert_allclose(predictor.predict_proba(mixed_texts), expected, atol=1e-7)
    assert not np.allclose(expected, _sigmoid(logits), atol=1e-3)  # T matters here


def test_calibrate_per_policy_methods(predictor: Predictor):
    logits = np.array([[-3.0, -1.0, 0.0], [0.5, 2.0, 8.0], [40.0, -40.0, 1.0]])
    specs = [p.model_copy() for p in predictor.card.policies]
    specs[0].calibration = Calibration(method="none")
    specs[1].calibration = Calibration(method="temperature", temperature=0.5)
    specs[2].calibration = Calibration(method="isotonic", x=[0.0, 0.5, 0.9, 1.0], y=[0.0, 0.1, 0.8, 1.0])
    card = predictor.card.model_copy(update={"policies": specs})
    out = calibrate(logits, card)
    np.testing.assert_allclose(out[:, 0], _sigmoid(logits[:, 0]))
    np.testing.assert_allclose(out[:, 1], _sigmoid(logits[:, 1] / 0.5))
    np.testing.assert_allclose(out[:, 2], np.interp(_sigmoid(logits[:, 2]), [0, 0.5, 0.9, 1], [0, 0.1, 0.8, 1]))
    assert out[1, 2] == pytest.approx(0.8 + (_sigmoid(8.0) - 0.9) / 0.1 * 0.2)
    assert np.isfinite(out).all()


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [([0.0], [0.0], ">= 2 knots"), ([0.0, 1.0], [0.0], "len"), ([0.5, 0.2], [0.0, 1.0], "ascending")],
)
def test_calibrate_rejects_bad_isotonic_knots(predictor: Predictor, x, y, match):
    specs = [p.model_copy() for p in predictor.card.policies]
    specs[1].calibration = Calibration(method="isotonic", x=x, y=y)
    card = predictor.card.model_copy(update={"policies": specs})
    with pytest.raises(ArtifactError, match=rf"policies\[harassment\]\.calibration.*{match}"):
        calibrate(np.zeros((1, 3)), card)


def test_flags_follow_card_thresholds_and_overrides(tiny_artifact: Path, tmp_path: Path, mixed_texts):
    model_dir = _copy(tiny_artifact, tmp_path)
    probs = Predictor.load(model_dir).predict_proba(mixed_texts)
    # Thresholds at each policy's median score: some texts flagged, some not, differently per policy.
    medians = np.median(probs, axis=0)
    _edit_card(model_dir, lambda c: [p.update(threshold=float(m)) for p, m in zip(c["policies"], medians)])
    predictor = Predictor.load(model_dir)
    results = predictor.predict(mixed_texts)
    for row, result in zip(probs, results):
        assert list(result["scores"]) == list(POLICIES) == list(result["flags"])
        for j, p in enumerate(POLICIES):
            assert result["scores"][p] == pytest.approx(row[j], abs=1e-6)
            assert result["flags"][p] == (row[j] >= medians[j])
    assert 0 < sum(r["flags"]["abusive"] for r in results) < len(mixed_texts)

    everything = predictor.predict(mixed_texts, thresholds={"violence": 0.0})
    assert all(r["flags"]["violence"] for r in everything)
    assert [r["flags"]["abusive"] for r in everything] == [r["flags"]["abusive"] for r in results]
    with pytest.raises(ValueError, match=r"thresholds\['threat'\]: unknown policy"):
        predictor.predict(mixed_texts, thresholds={"threat": 0.5})
    with pytest.raises(ValueError, match=r"thresholds\['abusive'\] = 1.5"):
        predictor.predict(mixed_texts, thresholds={"abusive": 1.5})


# ---- truncation ----------------------------------------------------------------------------------------------
def test_truncation_at_card_max_length_is_reported(predictor: Predictor, tiny_spec):
    head = " ".join(["stupid"] * (tiny_spec.max_length - 2))  # exactly max_length with [CLS] and [SEP]
    long_a, long_b = head + " love love great day", head + " kill kill hurt die"
    results = predictor.predict(["short one", head, long_a, long_b])
    assert [r["truncated"] for r in results] == [False, False, True, True]
    # Only the first max_length tokens are seen, so texts differing after them score identically.
    assert results[2]["scores"] == pytest.approx(results[3]["scores"], abs=1e-6)
    assert results[1]["scores"] == pytest.approx(results[2]["scores"], abs=1e-6)


# ---- the real bundled backbone -------------------------------------------------------------------------------
@pytest.mark.integration
def test_real_backbone_artifact_scores_through_predictor(tmp_path: Path, tiny_card):
    from transformers import AutoTokenizer

    from serving.artifact import save_artifact
    from serving.backbone import BUNDLED_BACKBONE, resolve_backbone
    from serving.modeling import build_model

    backbone = resolve_backbone(BUNDLED_BACKBONE)
    model = build_model(backbone, head="mean")
    card = tiny_card(head="mean", max_length=128, backbone=BUNDLED_BACKBONE, model_name="tweetguard")
    save_artifact(tmp_path / "model", model, AutoTokenizer.from_pretrained(backbone), card)

    predictor = Predictor.load(tmp_path / "model", batch_size=2)
    texts = ["@user you are a complete idiot", "what a lovely day 🌞", "i will hurt you " * 40]
    probs = predictor.predict_proba(texts)
    assert probs.shape == (3, len(POLICIES)) and np.all((probs > 0) & (probs < 1))
    alone = np.stack([predictor.predict_proba([t])[0] for t in texts])
    np.testing.assert_allclose(probs, alone, rtol=0, atol=1e-5)
    assert [r["truncated"] for r in predictor.predict(texts)] == [False, False, True]
