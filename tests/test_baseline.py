"""training.fit.baseline on in-test DatasetDicts: learning, masking, save/load, the card, train_baseline's output."""

import json

import datasets
import numpy as np
import pytest

from serving.artifact import CARD_FILE, ArtifactError
from serving.policies import POLICIES
from training.config import ConfigError, load_config
from training.data.card import DataCard
from training.data.prepare import Prepared
from training.fit.baseline import BASELINE_NAME, MODEL_FILE, Baseline, BaselineError, fit_baseline, train_baseline

A, H, V = (POLICIES.index(p) for p in ("abusive", "harassment", "violence"))
@pytest.fixture(scope="module")
def fitted(toy) -> Baseline:
    return fit_baseline(toy.dataset(), toy.cfg)


def test_learns_a_separable_problem(fitted, toy):
    rows = toy.rows(200, seed=9)
    probs = fitted.predict_proba([t for t, _ in rows])
    labels = np.array([lab for _, lab in rows])
    assert probs.shape == (200, len(POLICIES))
    flags = probs >= np.array([fitted.thresholds[p] for p in POLICIES])
    assert (flags == (labels == 1)).mean(axis=0).min() > 0.97
    assert fitted.card.validation_metrics["mean_roc_auc"] > 0.99


def test_texts_are_normalized_before_scoring(fitted):
    # normalize_tweet maps every mention to @user and decodes entities: these must score identically.
    a, b = fitted.predict_proba(["@alice you absolute idiot &amp; moron", "@bob you absolute idiot & moron"])
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(fitted, tmp_path, toy):
    texts = [t for t, _ in toy.rows(50, seed=11)] + ["", "🔪🔪", "completely unseen words here"]
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([CARD_FILE, MODEL_FILE])
    loaded = Baseline.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts))
    card = json.loads((tmp_path / "m" / CARD_FILE).read_text())
    assert card["model_name"] == BASELINE_NAME and card["head"] == "tfidf-logreg"
    assert [p["name"] for p in card["policies"]] == list(POLICIES)
    for p in card["policies"]:
        assert p["threshold"] == fitted.thresholds[p["name"]]
        assert p["threshold_method"].startswith("max F1 on validation")
    assert card["validation_metrics"]["abusive/n_pos"] > 0


def test_load_rejects_what_is_not_a_baseline(fitted, tmp_path):
    with pytest.raises(ArtifactError, match="no policy_card.json"):
        Baseline.load(tmp_path)
    fitted.save(tmp_path / "m")
    (tmp_path / "m" / MODEL_FILE).unlink()
    with pytest.raises(BaselineError, match="missing"):
        Baseline.load(tmp_path / "m")


def test_unknown_labels_are_masked_not_negative(toy):
    # A second source mentions threats constantly but does not label violence (-1). If unknown counted as
    # negative, "kill" would look harmless; masked, it stays the strongest violence cue.
    noisy = [(f"{toy.THREAT[i % 4]} {toy.NEUTRAL[i // 4 % 8]}", [0, 0, -1]) for i in range(400)]  # every pairing
    clean = toy.rows(200, seed=3)
    masked = datasets.DatasetDict({"train": toy.split(clean + noisy)})
    as_negative = datasets.DatasetDict({"train": toy.split(clean + [(t, [0, 0, 0]) for t, _ in noisy])})
    text = ["i will kill you tomorrow"]
    p_masked = fit_baseline(masked, toy.cfg).predict_proba(text)[0, V]
    p_negative = fit_baseline(as_negative, toy.cfg).predict_proba(text)[0, V]
    assert p_masked > 0.7 and p_negative < 0.5


def test_policy_without_labels_is_a_clear_error(toy):
    rows = [(t, [lab[0], lab[1], -1]) for t, lab in toy.rows(100, seed=4)]
    with pytest.raises(BaselineError, match=r"'violence'.*0 positive / 0 negative"):
        fit_baseline(datasets.DatasetDict({"train": toy.split(rows)}), toy.cfg)
    one_class = [(t, [lab[0], lab[1], 0]) for t, lab in toy.rows(100, seed=4)]
    with pytest.raises(BaselineError, match=r"'violence'.*0 positive / 100 negative"):
        fit_baseline(datasets.DatasetDict({"train": toy.split(one_class)}), toy.cfg)


def test_train_baseline_saves_and_reports_per_source(tmp_path, toy):
    ds = toy.dataset(seed=5)
    ds["test"] = datasets.concatenate_datasets([ds["test"], toy.split(toy.rows(60, seed=6), source="other")])
    card = DataCard({"sources": [{"name": "toy", "license": "MIT", "content_hash": "abc"}]})
    prepared = Prepared(ds, card, tmp_path / "ds", tmp_path / "card.json", tmp_path / "card.md", "f" * 64)
    overrides = ["baseline.min_df=1", "run_name=toy", f"train.output_dir={tmp_path}"]
    cfg = load_config("configs/baseline.yaml", overrides)
    out, metrics = train_baseline(cfg, prepared)
    assert out == tmp_path / "toy" / "model"
    loaded = Baseline.load(out)
    assert loaded.card.dataset_hash == "f" * 64 and loaded.card.sources[0].name == "toy"
    assert loaded.card.config["model"]["kind"] == "tfidf"
    assert {c.calibration.method for c in loaded.card.policies} == {"platt"}
    for key in ("validation/mean_pr_auc", "test/toy/abusive/roc_auc", "test/other/violence/f1"):
        assert key in metrics and 0 <= metrics[key] <= 1
    assert metrics["test/other/abusive/n_pos"] + metrics["test/toy/abusive/n_pos"] == metrics["test/abusive/n_pos"]
    assert metrics["test/mean_roc_auc"] > 0.99
    # The card's validation metrics are the run's overall validation metrics (one computation, one number).
    assert loaded.card.validation_metrics["mean_pr_auc"] > 0.99
    card_metrics = loaded.card.validation_metrics
    assert {f"{p}/ece_uncalibrated" for p in POLICIES} <= card_metrics.keys()  # what calibration bought
    for k, v in card_metrics.items():
        assert k.endswith("ece_uncalibrated") or metrics[f"validation/{k}"] == pytest.approx(v), k


def test_baseline_config_validation(tmp_path):
    assert load_config("configs/baseline.yaml").model.kind == "tfidf"
    with pytest.raises(ConfigError, match=r"baseline\.char_ngram_range.*1 <= min <= max"):
        load_config(overrides=["baseline.char_ngram_range=[5,2]"])
    with pytest.raises(ConfigError, match=r"baseline\.class_weight"):
        load_config(overrides=["baseline.class_weight=auto"])
    with pytest.raises(ConfigError, match=r"model\.kind"):
        load_config(overrides=["model.kind=svm"])
