"""Scoring the validation split during training (for early stopping and the per-step MLflow metrics).

Metrics come from `training.metrics` (the evaluation code, shared with the TF-IDF baseline and
`tweetguard evaluate`). Thresholds and calibration are fit once at the end by `training.fit.calibration`,
through the serving scorer, on the best weights.

Scores are the model's plain logits, as served: the per-source terms of `train.source_terms`
(training.fit.source_terms) belong to the training loss only and never enter validation.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from serving.policies import POLICIES
from training.metrics import masked_metrics
from training.fit.batches import Encoded, collate
from training.fit.device import CPU, Accel


def predict_probs(model, data: Encoded, batch_size: int, pad_id: int, accel: Accel = CPU) -> np.ndarray:
    """Sigmoid probabilities [N, P] in the input order (`predict_logits`)."""
    logits = predict_logits(model, data, batch_size, pad_id, accel)
    return torch.sigmoid(torch.from_numpy(logits)).numpy()


@torch.no_grad()
def predict_logits(model, data: Encoded, batch_size: int, pad_id: int, accel: Accel = CPU,
                   progress: str | None = None) -> np.ndarray:
    """Raw logits [N, P] float32 in the input order; batches are length-sorted so padding stays small. The model is
    on `accel`'s device and precision (training.fit.device), in eval mode for the call. `progress`: a progress bar
    with that label."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in data.input_ids], kind="stable")
    out = np.zeros((len(data), len(POLICIES)), dtype=np.float32)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=progress, unit="batch", disable=progress is None, dynamic_ncols=True):
        idx = order[start:start + batch_size]
        batch = collate(data, idx, pad_id)
        batch.pop("labels")
        with accel.autocast():
            logits = model(**accel.to(batch)).logits  # [B, P]
        out[idx] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


def validation_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Masked per-policy metrics plus their means (e.g. `mean_pr_auc`); unknown labels are left out."""
    return {k: float(v) for k, v in masked_metrics(labels, probs).items() if isinstance(v, (int, float))}
