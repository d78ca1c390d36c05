"""Score a split with any tweetguard model directory: the transformer through `serving.predictor.Predictor`,
the TF-IDF baseline through its own scorer. Both return raw logits; calibration is `serving.predictor.calibrate`
(the card's calibration, the one place that math lives), so evaluated probabilities are served probabilities.

The kind is read from the directory's contents (the baseline's joblib file), never from a name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from serving.artifact import PolicyCard
from serving.policies import POLICIES


class Scorer(Protocol):
    card: PolicyCard

    def logits(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class BaselineScorer:
    """The TF-IDF baseline behind the Predictor's `logits` interface."""

    baseline: "training.baseline.Baseline"  # noqa: F821

    @property
    def card(self) -> PolicyCard:
        return self.baseline.card

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.baseline.decision_function(list(texts))


def model_kind(model_dir: str | Path) -> str:
    from training.baseline import MODEL_FILE

    return "tfidf" if (Path(model_dir) / MODEL_FILE).is_file() else "transformer"


def load_scorer(model_dir: str | Path, batch_size: int = 64) -> Scorer:
    if model_kind(model_dir) == "tfidf":
        from training.baseline import Baseline

        return BaselineScorer(Baseline.load(model_dir))
    from serving.predictor import Predictor

    return Predictor.load(model_dir, batch_size=batch_size)


@dataclass
class Scored:
    """One split scored by one model; arrays are row-aligned with the split."""

    logits: np.ndarray  # [N, P] raw
    probs: np.ndarray  # [N, P] calibrated as the card says
    labels: np.ndarray  # [N, P] 1 / 0 / -1
    texts: list[str]
    sources: np.ndarray  # [N] str
    subsets: np.ndarray  # [N] str
    raw_labels: list[str]
    ids: list[str]

    @property
    def raw_probs(self) -> np.ndarray:
        """Uncalibrated sigmoid(logit): what the model says before the card's calibration."""
        return np.exp(-np.logaddexp(0.0, -self.logits))


def split_labels(split) -> np.ndarray:
    return np.asarray(split["labels"], dtype=np.int64).reshape(len(split), len(POLICIES))


def score_split(scorer: Scorer, split) -> Scored:
    """Score every row of a unified-data split (columns id, text, source, labels, subset, raw_label)."""
    from serving.predictor import calibrate

    texts = list(split["text"])
    logits = np.asarray(scorer.logits(texts), dtype=np.float64)
    columns = set(split.column_names)
    blank = [""] * len(texts)
    return Scored(
        logits=logits, probs=calibrate(logits, scorer.card), labels=split_labels(split), texts=texts,
        sources=np.asarray(split["source"], dtype=str),
        subsets=np.asarray(split["subset"] if "subset" in columns else blank, dtype=str),
        raw_labels=list(split["raw_label"]) if "raw_label" in columns else blank,
        ids=list(split["id"]) if "id" in columns else [str(i) for i in range(len(texts))],
    )
