"""training.metrics: masking, agreement with scikit-learn, thresholds, bootstrap, calibration fitting."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from serving.artifact import PolicyCard, calibrate
from serving.policies import POLICIES
from training.metrics import (
    bootstrap_ci,
    choose_thresholds,
    expected_calibration_error,
    grouped_metrics,
    masked_metrics,
    paired_bootstrap_diff,
)
from training.fit.calibration import fit_calibration, fit_isotonic, fit_temperature

P = len(POLICIES)


def random_case(n=400, seed=0, unknown=0.3, ties=True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, P))
    probs = np.clip(0.35 * labels + 0.65 * rng.random((n, P)), 0, 1)
    if ties:  # rounded scores: ties must be handled the way scikit-learn does
        probs = np.round(probs, 2)
    labels[rng.random((n, P)) < unknown] = -1
    return labels, probs


def test_matches_sklearn_per_policy_with_ties():
    labels, probs = random_case()
    thresholds = {"abusive": 0.4, "harassment": 0.55, "violence": 0.5}
    m = masked_metrics(labels, probs, thresholds)
    for j, policy in enumerate(POLICIES):
        known = labels[:, j] != -1
        y, p = labels[known, j], probs[known, j]
        flags = p >= thresholds[policy]
        assert m[f"{policy}/roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert m[f"{policy}/pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert m[f"{policy}/precision"] == pytest.approx(precision_score(y, flags), abs=1e-12)
        assert m[f"{policy}/recall"] == pytest.approx(recall_score(y, flags), abs=1e-12)
        assert m[f"{policy}/f1"] == pytest.approx(f1_score(y, flags), abs=1e-12)
        assert m[f"{policy}/n_pos"] == (y == 1).sum() and m[f"{policy}/n_neg"] == (y == 0).sum()
    assert m["mean_pr_auc"] == pytest.approx(np.mean([m[f"{p}/pr_auc"] for p in POLICIES]))


def test_unknown_rows_never_affect_a_policy():
    labels, probs = random_case(seed=1, unknown=0.0)
    base = masked_metrics(labels, probs)
    # Extra rows unknown for abusive only, with scores that would wreck abusive's metrics if they counted
    # (confident wrong-side scores), while they are real labels for the other policies.
    extra_labels = np.array([[-1, 1, 0]] * 50 + [[-1, 0, 1]] * 50)
    extra_probs = np.array([[0.99, 0.9, 0.1]] * 50 + [[0.99, 0.1, 0.9]] * 50)
    m = masked_metrics(np.vstack([labels, extra_labels]), np.vstack([probs, extra_probs]))
    for key in ("roc_auc", "pr_auc", "precision", "recall", "f1", "ece", "n_pos", "n_neg"):
        assert m[f"abusive/{key}"] == base[f"abusive/{key}"], key
    # ... and the same rows do count for the policies that label them.
    assert m["harassment/n_pos"] == base["harassment/n_pos"] + 50
    assert m["harassment/roc_auc"] != base["harassment/roc_auc"]
    # The naive (unmasked, -1 treated as negative) computation would have differed: the test has teeth.
    y = np.vstack([labels, extra_labels])[:, 0] == 1
    assert roc_auc_score(y, np.vstack([probs, extra_probs])[:, 0]) != pytest.approx(base["abusive/roc_auc"])


def test_missing_class_is_omitted_not_crashing():
    labels, probs = random_case(seed=2, unknown=0.0)
    labels[:, 1] = 0  # harassment: no positives
    labels[:, 2] = -1  # violence: nothing labeled
    m = masked_metrics(labels, probs)
    for key in ("roc_auc", "pr_auc", "recall", "f1"):
        assert f"harassment/{key}" not in m
        assert f"violence/{key}" not in m
    assert m["harassment/precision"] == 0.0 and m["harassment/n_pos"] == 0 and m["harassment/n_neg"] == len(labels)
    assert m["violence/n_pos"] == 0 and m["violence/n_neg"] == 0
    assert m["mean_pr_auc"] == pytest.approx(m["abusive/pr_auc"])  # over the policies where it is defined
    assert not any(math.isnan(v) for v in m.values())
    assert math.isnan(masked_metrics(np.full((5, P), -1), np.full((5, P), 0.5))["mean_pr_auc"])


def test_input_validation_names_the_problem():
    labels, probs = random_case(n=10)
    with pytest.raises(ValueError, match="shape"):
        masked_metrics(labels, probs[:, :2])
    with pytest.raises(ValueError, match="1, 0 or -1"):
        masked_metrics(labels * 2, probs)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masked_metrics(labels, probs + 1)


def _separable(n=200):
    # Policy-wise identical toy: positives score 0.6..0.95, negatives 0.05..0.7 (overlap in 0.6-0.7).
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, n)
    p = np.where(y == 1, rng.uniform(0.6, 0.95, n), rng.uniform(0.05, 0.7, n))
    return np.repeat(y[:, None], P, 1), np.repeat(p[:, None], P, 1)


def test_max_f1_threshold_is_the_best_on_the_data():
    labels, probs = _separable()
    chosen = choose_thresholds(labels, probs)
    y, p = labels[:, 0], probs[:, 0]
    best = max(f1_score(y, p >= t) for t in np.unique(p))
    thr, how = chosen["abusive"]
    assert f1_score(y, p >= thr) == pytest.approx(best)
    assert 0.55 < thr < 0.75 and "max F1 on validation" in how


def test_precision_and_recall_targets():
    labels, probs = _separable()
    y, p = labels[:, 0], probs[:, 0]
    thr, how = choose_thresholds(labels, probs, method="precision", target=0.95)["abusive"]
    assert precision_score(y, p >= thr) >= 0.95
    lower = p[p < thr]
    if len(lower):  # the next lower threshold misses the target: thr is the lowest that reaches it
        assert precision_score(y, p >= lower.max()) < 0.95
    assert "precision >= 0.95" in how
    thr, how = choose_thresholds(labels, probs, method="recall", target=0.9)["violence"]
    assert recall_score(y, p >= thr) >= 0.9
    assert recall_score(y, p >= p[p > thr].min()) < 0.9  # the next higher threshold misses it
    with pytest.raises(ValueError, match="target"):
        choose_thresholds(labels, probs, method="precision")


def test_prevalence_reweights_precision():
    labels, probs = _separable()
    y, p = labels[:, 0] == 1, probs[:, 0]
    pi = 0.05
    thr, how = choose_thresholds(labels, probs, method="recall", target=0.9, prevalence=pi)["abusive"]
    tpr, fpr = (p[y] >= thr).mean(), (p[~y] >= thr).mean()
    expected = pi * tpr / (pi * tpr + (1 - pi) * fpr)
    assert f"precision {expected:.3f}" in how and "prevalence 0.05" in how
    # At a rare-positive prevalence, max-F1 moves to a stricter threshold.
    strict, lab = choose_thresholds(labels, probs, prevalence=pi), choose_thresholds(labels, probs)
    assert strict["abusive"][0] >= lab["abusive"][0]
    # masked_metrics reports precision at that prevalence with the same formula, and 1:1 it is plain precision.
    m = masked_metrics(labels, probs, {"abusive": thr}, prevalence=pi)
    assert m["abusive/precision_at_prevalence"] == pytest.approx(expected)
    half = masked_metrics(labels, probs, prevalence=y.mean())
    assert half["abusive/precision_at_prevalence"] == pytest.approx(half["abusive/precision"])
    assert "abusive/precision_at_prevalence" not in masked_metrics(labels, probs)


def test_threshold_without_both_classes_keeps_default():
    labels, probs = _separable()
    labels[:, 2] = -1
    with pytest.warns(UserWarning, match="violence"):
        chosen = choose_thresholds(labels, probs)
    assert chosen["violence"][0] == 0.5 and "default" in chosen["violence"][1]


def test_bootstrap_ci_covers_point_and_matches_generic_path():
    labels, probs = random_case(n=300, seed=4, ties=False)
    point = masked_metrics(labels, probs)
    fast = bootstrap_ci(labels, probs, n=300, seed=0)
    for key in ("abusive/pr_auc", "violence/roc_auc", "mean_pr_auc", "harassment/f1"):
        lo, hi = fast[key]
        assert lo < point[key] < hi and hi - lo < 0.3
    # The generic path (resample indices, call a function) draws the same resamples from the same seed.
    generic = bootstrap_ci(labels, probs, metric_fn=masked_metrics, n=300, seed=0)
    for key, ci in fast.items():
        assert generic[key] == pytest.approx(ci, abs=1e-9), key
    with_float = bootstrap_ci(labels, probs, metric_fn=lambda l, p: masked_metrics(l, p)["mean_roc_auc"], n=50)
    assert set(with_float) == {"value"}


def test_paired_bootstrap_detects_a_worse_model():
    labels, probs = random_case(n=500, seed=5, unknown=0.0, ties=False)
    noise = np.random.default_rng(0).random(probs.shape)
    worse = 0.3 * probs + 0.7 * noise
    diff = paired_bootstrap_diff(labels, probs, worse, n=300)
    assert diff["abusive/pr_auc"][1] < 0  # the whole interval is below zero
    same = paired_bootstrap_diff(labels, probs, probs, n=50)
    assert same["mean_pr_auc"] == (0.0, 0.0)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(6)
    z = rng.normal(0, 3, 20000)  # true logits
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    y[rng.random(z.size) < 0.2] = -1  # unknown rows must be ignored
    assert fit_temperature(2.5 * z, y)[0] == pytest.approx(2.5, rel=0.08)  # overconfident model -> T = 2.5
    assert fit_temperature(0.5 * z, y) == (pytest.approx(0.5, rel=0.08), 0.0)
    # Platt: a model trained with a positive weight of e^1.5 has its logits shifted up by 1.5; the bias undoes it.
    t, b = fit_temperature(2.5 * z + 1.5, y, bias=True)
    assert t == pytest.approx(2.5, rel=0.08) and b == pytest.approx(-1.5 / 2.5, abs=0.08)
    with pytest.warns(UserWarning, match="single class"):
        assert fit_temperature(z, np.ones_like(y)) == (1.0, 0.0)


def test_fit_calibration_through_the_predictor_lowers_ece():
    rng = np.random.default_rng(7)
    z = rng.normal(0, 2, (5000, P))
    labels = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    logits = 3.0 * z + 1.0  # overconfident, and shifted as positive weighting does
    card = PolicyCard()
    before = [expected_calibration_error(labels[:, j], calibrate(logits, card)[:, j]) for j in range(P)]
    for method in ("platt", "isotonic"):
        for spec, cal in zip(card.policies, fit_calibration(logits, labels, method).values()):
            spec.calibration = cal
        after = calibrate(logits, card)  # the Predictor's apply-side math
        for j in range(P):
            assert expected_calibration_error(labels[:, j], after[:, j]) < min(0.03, before[j] / 2), method


def test_isotonic_knots_are_monotone():
    rng = np.random.default_rng(8)
    p = rng.random(1000)
    y = (rng.random(1000) < p**2).astype(int)
    x, v = fit_isotonic(p, y)
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(v) >= 0) and 0 <= v[0] and v[-1] <= 1


def test_ece_of_calibrated_and_miscalibrated_data():
    rng = np.random.default_rng(9)
    p = rng.random(200_000)
    assert expected_calibration_error((rng.random(p.size) < p).astype(int), p) < 0.01
    # True rate p^2 while predicting p: ECE -> integral of |p - p^2| = 1/6 (minus binning error).
    assert expected_calibration_error((rng.random(p.size) < p**2).astype(int), p) == pytest.approx(1 / 6, abs=0.01)
    # masked_metrics reports the same number per policy.
    labels = (rng.random((p.size, P)) < p[:, None]).astype(int)
    probs = np.repeat(p[:, None], P, 1)
    assert masked_metrics(labels, probs)["abusive/ece"] == pytest.approx(
        expected_calibration_error(labels[:, 0], p), abs=1e-12)


def test_grouped_metrics_per_source():
    labels, probs = random_case(n=300, seed=10, unknown=0.0)
    groups = np.array(["a"] * 200 + ["b"] * 100)
    labels[200:, 2] = -1  # source b never labels violence
    m = grouped_metrics(labels, probs, groups, prefix="test/")
    assert m["test/abusive/pr_auc"] == masked_metrics(labels, probs)["abusive/pr_auc"]
    assert m["test/b/abusive/roc_auc"] == masked_metrics(labels[200:], probs[200:])["abusive/roc_auc"]
    assert m["test/a/violence/n_pos"] + m["test/b/abusive/n_pos"] > 0
    assert not any(k.startswith("test/b/violence/") for k in m)
