"""Scoring the validation split during training (for early stopping and the per-step MLflow metrics).

Metrics come from `training.evaluation.metrics` (the evaluation code, shared with the TF-IDF baseline and
`tweetguard evaluate`). Thresholds and calibration are fit once at the end by `training.fit.calibration`,
through the serving scorer, on the best weights.

Scores are the model's plain logits, as served: the per-source terms of `train.source_terms`
(training.fit.source_terms) belong to the training loss only and never enter validation.
"""

from __future__ import annotations

import numpy as np
import torch

from serving.policies import POLICIES
from training.evaluation.metrics import masked_metrics
from training.fit.batches import Encoded, collate
from training.fit.device import CPU, Accel


@torch.no_grad()
def predict_probs(model, data: Encoded, batch_size: int, pad_id: int, accel: Accel = CPU) -> np.ndarray:
    """Sigmoid probabilities [N, P] in the input order; batches are length-sorted so padding stays small. The
    model is on `accel`'s device and precision (training.fit.device)."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in data.input_ids], kind="stable")
    probs = np.zeros((len(data), len(POLICIES)), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate(data, idx, pad_id)
        batch.pop("labels")
        with accel.autocast():
            logits = model(**accel.to(batch)).logits  # [B, P]
        probs[idx] = torch.sigmoid(logits.float()).cpu().numpy()
    model.train(was_training)
    return probs


def validation_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Masked per-policy metrics plus their means (e.g. `mean_pr_auc`); unknown labels are left out."""
    return {k: float(v) for k, v in masked_metrics(labels, probs).items() if isinstance(v, (int, float))}
