"""Training's last stage: per-policy calibration and decision thresholds, both fit on validation.

`finalize_card(scorer, validation, cfg)` returns the policy card to save with the model (it writes nothing):
1. raw logits on validation through the same scorer the service uses;
2. per-policy calibration (`cfg.calibration.method`, default platt = temperature + bias) fit on the known labels only;
3. thresholds chosen on the *calibrated* probabilities (they are what the card's threshold is compared with):
   max F1 by default, or a target precision / recall (at the validation mix unless
   `calibration.flag_at_deployment_prevalence`); and the `review` / `remove` decision tiers (card v2) for their
   precision targets as if positives had `calibration.deployment_prevalence` (3% by default);
4. validation metrics at those thresholds, plus ECE before / after calibration, recorded in the card.
The fitting of each calibration method (temperature, Platt, isotonic) lives here too; applying it is
`serving.artifact.calibrate`.
   The "after" ECE is in-sample (fit and measured on the same rows): optimistic, and ~0 for isotonic.
   `tweetguard evaluate` reports it on test, where it is honest.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
from scipy.optimize import minimize

from serving.artifact import CARD_SCHEMA_VERSION, TIERS, Calibration, PolicyCard, calibrate, sigmoid
from serving.policies import POLICIES, UNKNOWN
from training.config import CalibrationConfig, Config
from training.metrics import (
    check_inputs,
    choose_thresholds,
    choose_tier,
    ece_per_policy,
    masked_metrics,
)
from training.scorer import Scored, Scorer, score_split


def finalize_card(scorer: Scorer, validation, cfg: Config | CalibrationConfig) -> PolicyCard:
    """A copy of the model's card with calibration, thresholds (and how they were chosen) and validation
    metrics fit on `validation` (a unified-data split). `scorer`: the serving Predictor, the TF-IDF baseline, or
    any other Scorer.

    The caller saves the card (`serving.artifact.write_card` / `save_artifact`) before registration.
    """
    return fit_on_validation(scorer, validation, cfg)[0]


def fit_on_validation(scorer: Scorer, validation, cfg: Config | CalibrationConfig) -> tuple[PolicyCard, Scored]:
    """`finalize_card`'s card, and `validation` scored with it (probs calibrated by that card: the reference
    distribution `training.evaluation.reference` keeps for drift monitoring)."""
    ccfg = cfg.calibration if isinstance(cfg, Config) else cfg
    scored = score_split(scorer, validation)
    fitted = fit_calibration(scored.logits, scored.labels, ccfg.method)
    card = scorer.card.model_copy(deep=True)
    for spec in card.policies:
        spec.calibration = fitted[spec.name]

    probs = calibrate(scored.logits, card)
    flag_prevalence = ccfg.deployment_prevalence if ccfg.flag_at_deployment_prevalence else None
    chosen = choose_thresholds(scored.labels, probs, method=ccfg.threshold_method, target=ccfg.threshold_target,
                               prevalence=flag_prevalence, on=f"validation ({len(validation)} rows)")
    for j, spec in enumerate(card.policies):
        spec.threshold, how = chosen[spec.name]
        spec.threshold_method = f"{how}; calibration {ccfg.method} fit on the same validation split"
        targets = getattr(ccfg.tiers, spec.name)
        for tier in TIERS:
            target = getattr(targets, tier)
            setattr(spec, tier, None if target is None else choose_tier(
                scored.labels[:, j], probs[:, j], target, prevalence=ccfg.deployment_prevalence,
                min_positives=ccfg.tier_min_positives, on=f"validation ({len(validation)} rows)"))
    card.schema_version = CARD_SCHEMA_VERSION  # tiers are v2, whatever card the scorer came with
    metrics = masked_metrics(scored.labels, probs, card.thresholds)
    # masked_metrics' `<policy>/ece` is after calibration; the raw model's ECE shows what calibration bought.
    before = ece_per_policy(scored.labels, scored.raw_probs)
    metrics.update({f"{p}/ece_uncalibrated": v for p, v in before.items() if np.isfinite(v)})
    card.validation_metrics = {**card.validation_metrics, **metrics}
    return card, replace(scored, probs=probs)


def _nll_and_grad(params: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    # Mean BCE of sigmoid(z / T + b) in (log T, b): unconstrained, T > 0 keeps the map increasing.
    # d/dlogT = mean((sigmoid - y) * -z/T), d/db = mean(sigmoid - y).
    s = z / np.exp(params[0]) + (params[1] if len(params) > 1 else 0.0)
    nll = np.mean(np.logaddexp(0.0, s) - y * s)
    err = sigmoid(s) - y
    grad = [np.mean(err * -(z / np.exp(params[0])))] + ([np.mean(err)] if len(params) > 1 else [])
    return float(nll), np.array(grad)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bias: bool = False) -> tuple[float, float]:
    """(T, b) minimizing the NLL of sigmoid(logit / T + b) on one policy's known labels (-1 ignored); b = 0
    unless `bias` (Platt scaling: it also moves the base rate, which positive weighting in training shifts).

    Returns (1.0, 0.0) (no change) when the labels lack a class: the optimum is then T -> 0 or infinity.
    """
    logits, labels = np.asarray(logits, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    known = labels != UNKNOWN
    z, y = logits[known], (labels[known] == 1).astype(np.float64)
    if y.min(initial=1) == y.max(initial=0):
        warnings.warn("fit_temperature: labels have a single class (or none); keeping T = 1, b = 0")
        return 1.0, 0.0
    # T within [0.01, 100]: beyond that the model's scores carry (almost) no ranking or are all-or-nothing.
    bounds = [(np.log(0.01), np.log(100.0))] + ([(-20.0, 20.0)] if bias else [])
    res = minimize(_nll_and_grad, x0=np.zeros(len(bounds)), args=(z, y), jac=True, method="L-BFGS-B",
                   bounds=bounds)
    return float(np.exp(res.x[0])), float(res.x[1]) if bias else 0.0


def fit_isotonic(probs: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    """Isotonic map of one policy's raw probability (-1 labels ignored) as knots (x ascending, y) for
    Calibration(method="isotonic"); the Predictor interpolates linearly between them, as sklearn does."""
    from sklearn.isotonic import IsotonicRegression

    probs, labels = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    known = labels != UNKNOWN
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs[known], labels[known] == 1)
    return iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()


def fit_calibration(logits: np.ndarray, labels: np.ndarray, method: str = "temperature") -> dict:
    """{policy: serving.artifact.Calibration} fit per policy on (validation) logits [N, P] and labels [N, P]."""
    logits = np.asarray(logits, dtype=np.float64)
    labels, _ = check_inputs(labels, np.zeros(logits.shape))
    out = {}
    for j, policy in enumerate(POLICIES):
        if method == "none":
            out[policy] = Calibration()
        elif method in ("temperature", "platt"):
            t, b = fit_temperature(logits[:, j], labels[:, j], bias=method == "platt")
            out[policy] = Calibration(method=method, temperature=t, bias=b)
        elif method == "isotonic":
            x, y = fit_isotonic(sigmoid(logits[:, j]), labels[:, j])
            out[policy] = Calibration(method="isotonic", x=x, y=y)
        else:
            raise ValueError(f"calibration method {method!r}: expected none, temperature, platt or isotonic")
    return out
