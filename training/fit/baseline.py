"""The classical baseline: TF-IDF (word + char_wb n-grams) + one logistic regression per policy.

Trained on the same unified data with the same `normalize_tweet`, the same unknown-label masking (each policy's
regression sees only the rows where that policy is labeled) and scored by the same `training.metrics`, so every
transformer run has a classical number beside it. `tweetguard train --config configs/baseline.yaml` dispatches
here (MLflow logging / registration as `tweetguard-tfidf` is `training.tracking.runs`'s job; this module never calls
MLflow).

Model directory: `tfidf_logreg.joblib` (vectorizer + regressions) and `policy_card.json` in the transformer's
card schema (model_name `tweetguard-tfidf`), so thresholds, calibration and validation metrics are read the
same way for both kinds of model. joblib is pickle: load only directories you (or your registry) wrote.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from serving.artifact import PolicyCard, SourceRef, calibrate, read_card, write_card
from serving.policies import POLICIES, UNKNOWN
from serving.preprocess import normalize_tweet
from training.config import BaselineConfig, Config
from training.metrics import grouped_metrics
from training.scorer import split_labels
from training.fit.calibration import finalize_card

MODEL_FILE = "tfidf_logreg.joblib"
BASELINE_NAME = "tweetguard-tfidf"
HEAD = "tfidf-logreg"
FORMAT_VERSION = 1  # bump when the joblib payload's layout changes


class BaselineError(ValueError):
    """The baseline cannot be trained or loaded as asked; the message says what to fix."""


def build_vectorizer(cfg: BaselineConfig) -> FeatureUnion:
    # Texts arrive normalized (lowercased, mentions -> @user), so the vectorizers do no preprocessing of their own.
    common = dict(lowercase=False, sublinear_tf=cfg.sublinear_tf, min_df=cfg.min_df, dtype=np.float32)
    return FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=tuple(cfg.word_ngram_range),
                                 max_features=cfg.word_max_features, **common)),
        # char_wb n-grams catch obfuscated and misspelled slurs ("f*ck", "idiooot") that words miss.
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(cfg.char_ngram_range),
                                 max_features=cfg.char_max_features, **common)),
    ])


@dataclass
class Baseline:
    vectorizer: FeatureUnion
    models: list[LogisticRegression]  # one per policy, POLICIES order
    card: PolicyCard

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits [N, P] of normalized texts (the regression's w.x + b)."""
        x = self.vectorizer.transform([normalize_tweet(t) for t in texts])
        return np.stack([m.decision_function(x) for m in self.models], axis=1).astype(np.float64)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities [N, P], calibrated as the card says (`serving.artifact.calibrate`)."""
        return calibrate(self.logits(texts), self.card)

    @property
    def thresholds(self) -> dict[str, float]:
        return self.card.thresholds

    def save(self, model_dir: str | Path) -> Path:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT_VERSION, "policies": list(POLICIES), "sklearn": sklearn.__version__,
                   "vectorizer": self.vectorizer, "models": self.models}
        tmp = model_dir / (MODEL_FILE + ".tmp")
        joblib.dump(payload, tmp, compress=3)
        os.replace(tmp, model_dir / MODEL_FILE)  # a reader never sees half a model
        write_card(model_dir, self.card)
        return model_dir

    @classmethod
    def load(cls, model_dir: str | Path) -> "Baseline":
        model_dir = Path(model_dir)
        card = read_card(model_dir)  # checks policies (names, order) and the preprocessing version
        path = model_dir / MODEL_FILE
        if card.head != HEAD or not path.is_file():
            raise BaselineError(f"{model_dir}: not a TF-IDF baseline (card head {card.head!r}, {MODEL_FILE} "
                                f"{'present' if path.is_file() else 'missing'})")
        payload = joblib.load(path)
        if payload.get("format") != FORMAT_VERSION or tuple(payload.get("policies", ())) != POLICIES:
            raise BaselineError(f"{path}: format {payload.get('format')} / policies {payload.get('policies')}; "
                                f"this code reads format {FORMAT_VERSION} with policies {POLICIES}")
        if payload["sklearn"] != sklearn.__version__:
            warnings.warn(f"{path}: saved with scikit-learn {payload['sklearn']}, loaded with "
                          f"{sklearn.__version__}; pickled estimators may score differently across versions")
        return cls(payload["vectorizer"], payload["models"], card)


def _fit_policy(x, labels: np.ndarray, j: int, cfg: BaselineConfig) -> LogisticRegression:
    known = labels[:, j] != UNKNOWN  # the same masking as the transformer's loss: unknown rows teach nothing
    y = labels[known, j]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise BaselineError(
            f"policy {POLICIES[j]!r}: the train split has {n_pos} positive / {n_neg} negative labels "
            f"(unknown rows are left out); a classifier needs both. Include a source that labels "
            f"{POLICIES[j]!r} (data.include / data.exclude)."
        )
    model = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter,
                               class_weight=None if cfg.class_weight == "none" else "balanced")
    return model.fit(x[known], y)


def fit_baseline(dataset, cfg: Config) -> Baseline:
    """Fit on `dataset["train"]` (`cfg.baseline`); if there is a `validation` split, the transformer's last
    training stage runs there too (`training.fit.calibration.finalize_card`, `cfg.calibration`): calibration, then
    thresholds on the calibrated probabilities, with the validation metrics, into the card."""
    bcfg = cfg.baseline
    train = dataset["train"]
    labels = split_labels(train)
    vectorizer = build_vectorizer(bcfg)
    x = vectorizer.fit_transform([normalize_tweet(t) for t in train["text"]])
    models = [_fit_policy(x, labels, j, bcfg) for j in range(len(POLICIES))]
    card = PolicyCard(model_name=BASELINE_NAME, head=HEAD, backbone=describe_baseline(bcfg))
    baseline = Baseline(vectorizer, models, card)
    if "validation" in dataset:
        baseline.card = finalize_card(baseline, dataset["validation"], cfg)
    return baseline


def describe_baseline(cfg: BaselineConfig) -> str:
    w, c = cfg.word_ngram_range, cfg.char_ngram_range
    return f"tfidf word {w[0]}-{w[1]} + char_wb {c[0]}-{c[1]} -> logistic regression (C={cfg.C:g})"


def evaluate_split(baseline: Baseline, split, prefix: str) -> dict[str, float]:
    """Overall and per-source masked metrics of one split at the card's thresholds."""
    probs = baseline.predict_proba(split["text"])
    return grouped_metrics(split_labels(split), probs, split["source"], baseline.thresholds, prefix=prefix)


def train_baseline(cfg: Config, prepared, out_dir: str | Path | None = None) -> tuple[Path, dict[str, float]]:
    """Fit, calibrate and threshold on validation, score validation and test (overall and per source), save.

    Returns (model directory, metrics) with keys like `validation/mean_pr_auc`, `test/abusive/f1`,
    `test/<source>/abusive/roc_auc`, `fit_seconds`. No MLflow here: the caller logs and registers.
    """
    start = time.perf_counter()
    baseline = fit_baseline(prepared.dataset, cfg)
    fit_seconds = time.perf_counter() - start
    card = baseline.card
    card.sources = [SourceRef(**s) for s in prepared.card.fitted_sources]
    card.dataset_hash = prepared.fingerprint
    card.config = cfg.model_dump(mode="json")
    metrics: dict[str, float] = {"fit_seconds": fit_seconds, "train_rows": float(len(prepared.dataset["train"]))}
    for split in ("validation", "test"):
        if split in prepared.dataset:
            metrics.update(evaluate_split(baseline, prepared.dataset[split], prefix=f"{split}/"))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir else Path(cfg.train.output_dir) / (cfg.run_name or f"tfidf-{stamp}") / "model"
    baseline.save(out)
    return out, metrics
