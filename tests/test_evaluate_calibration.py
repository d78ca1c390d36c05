"""finalize_card: calibration + thresholds fit on validation, as training's last stage, through the real Predictor."""

from __future__ import annotations

import shutil

import datasets
import numpy as np
import pytest

from serving.artifact import write_card
from serving.policies import POLICIES
from serving.predictor import Predictor
from training.config import load_config
from training.metrics import choose_thresholds, choose_tier
from training.fit.calibration import finalize_card

TRUE_T = 3.0  # labels are drawn from sigmoid(logit / 3): the raw model is over-confident


@pytest.fixture(scope="module")
def validation(tiny_artifact, tiny_spec) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(tiny_spec.words, size=rng.integers(3, 12))) + f" n{i}" for i in range(800)]
    logits = Predictor.load(tiny_artifact).logits(texts)
    labels = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits / TRUE_T))).astype(int)
    labels[::7, 2] = -1  # unknown labels must be ignored, not read as negatives
    return datasets.Dataset.from_dict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                       "source": ["synthetic"] * len(texts), "labels": labels.tolist(),
                                       "subset": [""] * len(texts), "raw_label": [""] * len(texts)})


def test_finalize_card_fits_calibration_and_thresholds(tiny_artifact, validation, tmp_path, dir_digest):
    before = dir_digest(tiny_artifact)
    card = finalize_card(Predictor.load(tiny_artifact), validation, load_config(None, ["calibration.method=temperature"]))
    assert dir_digest(tiny_artifact) == before  # returns a card; writes nothing
    for spec in card.policies:
        assert spec.calibration.method == "temperature"
        assert TRUE_T / 1.6 < spec.calibration.temperature < TRUE_T * 1.6, spec
        assert "max F1" in spec.threshold_method and "validation" in spec.threshold_method
    metrics = card.validation_metrics
    for p in POLICIES:
        assert metrics[f"{p}/ece"] < metrics[f"{p}/ece_uncalibrated"]
    # The stored card reproduces the thresholds through the serving path.
    model_dir = shutil.copytree(tiny_artifact, tmp_path / "model")
    write_card(model_dir, card)
    probs = Predictor.load(model_dir).predict_proba(validation["text"])
    expected = choose_thresholds(np.asarray(validation["labels"]), probs)
    assert card.thresholds == pytest.approx({p: t for p, (t, _) in expected.items()})


def test_target_precision_and_deployment_prevalence(tiny_artifact, validation):
    cfg = load_config(None, ["calibration.threshold_method=precision", "calibration.threshold_target=0.6",
                             "calibration.deployment_prevalence=0.05", "calibration.method=none",
                             "calibration.flag_at_deployment_prevalence=true"])
    card = finalize_card(Predictor.load(tiny_artifact), validation, cfg)
    default = finalize_card(Predictor.load(tiny_artifact), validation, load_config(None, ["calibration.method=none"]))
    for spec, base in zip(card.policies, default.policies):
        assert spec.calibration.method == "none"
        assert "precision >= 0.6 at prevalence 0.05" in spec.threshold_method or "NOT reached" in spec.threshold_method
        # At 5% prevalence a 0.6 precision needs a stricter threshold than max F1 on a ~50% positive split.
        assert spec.threshold >= base.threshold


def test_the_default_states_a_deployment_prevalence_for_the_tiers_only(tiny_artifact, validation):
    """The default config chooses tiers at 3% positives (stated in the card) and the flag at the validation mix."""
    cfg = load_config(None, ["calibration.method=none", "calibration.tier_min_positives=1"])
    assert cfg.calibration.deployment_prevalence == 0.03 and not cfg.calibration.flag_at_deployment_prevalence
    card = finalize_card(Predictor.load(tiny_artifact), validation, cfg)
    at_mix = finalize_card(Predictor.load(tiny_artifact), validation,
                           load_config(None, ["calibration.method=none", "calibration.tier_min_positives=1",
                                              "calibration.deployment_prevalence=null"]))
    for spec, mix in zip(card.policies, at_mix.policies):
        assert spec.threshold == mix.threshold  # the flag does not move
        assert spec.review.prevalence == 0.03 and mix.review.prevalence is None
        assert "at prevalence 0.03" in spec.review.note
        if spec.review.threshold is not None and mix.review.threshold is not None:
            assert spec.review.threshold >= mix.review.threshold  # fewer positives: a stricter cut


def test_finalize_card_chooses_tiers_for_their_targets(tiny_artifact, validation, tmp_path):
    cfg = load_config(None, ["calibration.method=temperature", "calibration.tiers.violence.remove=null",
                             "calibration.deployment_prevalence=null",
                             "calibration.tiers.harassment.remove=1.0", "calibration.tier_min_positives=5"])
    card = finalize_card(Predictor.load(tiny_artifact), validation, cfg)
    assert card.schema_version == 2
    model_dir = shutil.copytree(tiny_artifact, tmp_path / "model")
    write_card(model_dir, card)
    labels, probs = np.asarray(validation["labels"]), Predictor.load(model_dir).predict_proba(validation["text"])
    for j, spec in enumerate(card.policies):
        target = 0.4 if spec.name == "harassment" else 0.6  # harassment's own default (config.TIER_TARGET_DEFAULTS)
        assert spec.review.target_precision == target and spec.review.prevalence is None
        want = choose_tier(labels[:, j], probs[:, j], target, min_positives=5)
        assert spec.review.threshold == pytest.approx(want.threshold) and spec.review.precision >= 0.6
    assert card.policy("violence").remove is None  # no target: no tier
    off = card.policy("harassment").remove  # precision 1.0 with >= 5 positives: not on these noisy labels
    assert off.threshold is None and "not reached" in off.note
    assert card.policy("abusive").remove.threshold >= card.policy("abusive").review.threshold
