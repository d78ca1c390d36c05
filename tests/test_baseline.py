"""training.baseline on in-test DatasetDicts: learning, masking, save/load, the card, train_baseline's output."""

import json

import datasets
import numpy as np
import pytest

from serving.artifact import CARD_FILE, ArtifactError
from serving.policies import POLICIES
from training.baseline import MODEL_FILE, MODEL_NAME, Baseline, BaselineError, fit_baseline, train_baseline
from training.config import BaselineConfig, ConfigError, load_config
from training.data import Prepared
from training.datacard import DataCard

A, H, V = (POLICIES.index(p) for p in ("abusive", "harassment", "violence"))
NEUTRAL = ["lovely weather today", "the match starts at nine", "reading a good book", "coffee with friends",
           "new album out friday", "train was late again", "happy birthday to my sister", "cooking pasta tonight"]
ABUSE = ["you absolute idiot", "what a pathetic moron", "stupid clown", "total idiot behaviour"]
THREAT = ["i will kill you", "gonna stab him tomorrow", "kill them all", "someone should shoot him"]
CFG = load_config(None, ["model.kind=tfidf", "baseline.min_df=1", "baseline.C=10", "calibration.method=none"])


def toy_rows(n: int, seed: int) -> list[tuple[str, list[int]]]:
    """Separable toy tweets: abusive <=> an insult, violence <=> a threat, harassment <=> abuse aimed at @user."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = rng.integers(0, 3)
        base = NEUTRAL[rng.integers(len(NEUTRAL))]
        if kind == 0:
            rows.append((f"{base} #{i}", [0, 0, 0]))
        elif kind == 1:
            aimed = bool(rng.integers(0, 2))
            text = f"{'@bob ' if aimed else ''}{ABUSE[rng.integers(len(ABUSE))]} {base}"
            rows.append((text, [1, int(aimed), 0]))
        else:
            rows.append((f"{THREAT[rng.integers(len(THREAT))]} {base}", [0, 0, 1]))
    return rows


def to_split(rows: list[tuple[str, list[int]]], source: str = "toy") -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "id": [f"{source}-{i}" for i in range(len(rows))], "text": [t for t, _ in rows],
        "source": [source] * len(rows), "labels": [lab for _, lab in rows],
        "subset": ["train"] * len(rows), "raw_label": [""] * len(rows),
    })


def toy_dataset(seed: int = 0) -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": to_split(toy_rows(300, seed)),
                                 "validation": to_split(toy_rows(120, seed + 1)),
                                 "test": to_split(toy_rows(120, seed + 2))})


@pytest.fixture(scope="module")
def fitted() -> Baseline:
    return fit_baseline(toy_dataset(), CFG)


def test_learns_a_separable_problem(fitted):
    rows = toy_rows(200, seed=9)
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


def test_save_load_round_trip(fitted, tmp_path):
    texts = [t for t, _ in toy_rows(50, seed=11)] + ["", "🔪🔪", "completely unseen words here"]
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([CARD_FILE, MODEL_FILE])
    loaded = Baseline.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts))
    card = json.loads((tmp_path / "m" / CARD_FILE).read_text())
    assert card["model_name"] == MODEL_NAME and card["head"] == "tfidf-logreg"
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


def test_unknown_labels_are_masked_not_negative():
    # A second source mentions threats constantly but does not label violence (-1). If unknown counted as
    # negative, "kill" would look harmless; masked, it stays the strongest violence cue.
    noisy = [(f"{THREAT[i % 4]} {NEUTRAL[i // 4 % 8]}", [0, 0, -1]) for i in range(400)]  # every pairing
    clean = toy_rows(200, seed=3)
    masked = datasets.DatasetDict({"train": to_split(clean + noisy)})
    as_negative = datasets.DatasetDict({"train": to_split(clean + [(t, [0, 0, 0]) for t, _ in noisy])})
    text = ["i will kill you tomorrow"]
    p_masked = fit_baseline(masked, CFG).predict_proba(text)[0, V]
    p_negative = fit_baseline(as_negative, CFG).predict_proba(text)[0, V]
    assert p_masked > 0.7 and p_negative < 0.5


def test_policy_without_labels_is_a_clear_error():
    rows = [(t, [lab[0], lab[1], -1]) for t, lab in toy_rows(100, seed=4)]
    with pytest.raises(BaselineError, match=r"'violence'.*0 positive / 0 negative"):
        fit_baseline(datasets.DatasetDict({"train": to_split(rows)}), CFG)
    one_class = [(t, [lab[0], lab[1], 0]) for t, lab in toy_rows(100, seed=4)]
    with pytest.raises(BaselineError, match=r"'violence'.*0 positive / 100 negative"):
        fit_baseline(datasets.DatasetDict({"train": to_split(one_class)}), CFG)


def test_train_baseline_saves_and_reports_per_source(tmp_path):
    ds = toy_dataset(seed=5)
    ds["test"] = datasets.concatenate_datasets([ds["test"], to_split(toy_rows(60, seed=6), source="other")])
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
