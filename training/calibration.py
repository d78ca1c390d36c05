"""Training's last stage: per-policy calibration and decision thresholds, both fit on validation.

`finalize_card(model, validation, cfg)` returns the policy card to save with the model (it writes nothing):
1. raw logits on validation through the same scorer the service uses;
2. per-policy calibration (`cfg.calibration.method`, default platt = temperature + bias) fit on the known labels only;
3. thresholds chosen on the *calibrated* probabilities (they are what the card's threshold is compared with):
   max F1 by default, or a target precision / recall, optionally as if positives had the deployment prevalence;
4. validation metrics at those thresholds, plus ECE before / after calibration, recorded in the card.
   The "after" ECE is in-sample (fit and measured on the same rows): optimistic, and ~0 for isotonic.
   `tweetguard evaluate` reports it on test, where it is honest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.artifact import PolicyCard
from serving.policies import POLICIES
from training.config import CalibrationConfig, Config
from training.metrics import choose_thresholds, expected_calibration_error, fit_calibration, masked_metrics
from training.scoring import Scorer, load_scorer, score_split


def ece_per_policy(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """{policy: ECE} over each policy's known labels (NaN where a policy has none)."""
    return {p: expected_calibration_error(labels[:, j], probs[:, j]) for j, p in enumerate(POLICIES)}


def finalize_card(model: str | Path | Scorer, validation, cfg: Config | CalibrationConfig) -> PolicyCard:
    """A copy of the model's card with calibration, thresholds (and how they were chosen) and validation
    metrics fit on `validation` (a unified-data split). `model`: an artifact dir, a Predictor, or any Scorer.

    The caller saves the card (`serving.artifact.write_card` / `save_artifact`) before registration.
    """
    ccfg = cfg.calibration if isinstance(cfg, Config) else cfg
    scorer = load_scorer(model) if isinstance(model, str | Path) else model
    scored = score_split(scorer, validation)
    fitted = fit_calibration(scored.logits, scored.labels, ccfg.method)
    card = scorer.card.model_copy(deep=True)
    for spec in card.policies:
        spec.calibration = fitted[spec.name]

    from serving.predictor import calibrate

    probs = calibrate(scored.logits, card)
    chosen = choose_thresholds(scored.labels, probs, method=ccfg.threshold_method, target=ccfg.threshold_target,
                               prevalence=ccfg.deployment_prevalence, on=f"validation ({len(validation)} rows)")
    for spec in card.policies:
        spec.threshold, how = chosen[spec.name]
        spec.threshold_method = f"{how}; calibration {ccfg.method} fit on the same validation split"
    metrics = masked_metrics(scored.labels, probs, card.thresholds)
    # masked_metrics' `<policy>/ece` is after calibration; the raw model's ECE shows what calibration bought.
    before = ece_per_policy(scored.labels, scored.raw_probs)
    metrics.update({f"{p}/ece_uncalibrated": v for p, v in before.items() if np.isfinite(v)})
    card.validation_metrics = {**card.validation_metrics, **metrics}
    return card
