"""Score a split with any model that has a policy card and raw logits (a `Scorer`): the transformer's
`serving.predictor.Predictor` or the TF-IDF `training.fit.baseline.Baseline`. Calibration is
`serving.artifact.calibrate` (the card's calibration, the one place that math lives), so evaluated
probabilities are served probabilities. Which kind a model directory holds is decided by the evaluation
command (`training.evaluation.evaluate.load_scorer`), not here. A base module like `training.metrics`: calibration
(training.fit) and evaluation both score through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from serving.artifact import PolicyCard, calibrate, sigmoid
from serving.policies import POLICIES


class Scorer(Protocol):
    card: PolicyCard

    def logits(self, texts: Sequence[str]) -> np.ndarray: ...


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
        return sigmoid(self.logits)


def split_labels(split) -> np.ndarray:
    return np.asarray(split["labels"], dtype=np.int64).reshape(len(split), len(POLICIES))


def score_split(scorer: Scorer, split) -> Scored:
    """Score every row of a unified-data split (columns id, text, source, labels, subset, raw_label)."""
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
