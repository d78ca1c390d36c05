"""Unintended-bias slices (the Jigsaw metrics) over identity-term mentions, per policy.

For a subgroup s (tweets mentioning one of its terms) and a policy's known labels:
- subgroup AUC: AUC within s. Low = the model cannot tell abuse from non-abuse when s is mentioned.
- BPSN AUC (background positive, subgroup negative): s's negatives vs the other tweets' positives.
  Low = benign mentions of s score as high as real abuse elsewhere (false positives on the identity).
- BNSP AUC (background negative, subgroup positive): s's positives vs the other tweets' negatives.
  Low = abuse mentioning s scores as low as benign tweets elsewhere (missed abuse of the identity).
A slice is judged only with at least `min_support` positives and negatives; otherwise it is reported with its
support and marked "too small to judge" (an AUC from a handful of tweets says nothing).

The identity terms and which texts mention them (`slice_masks`) are data facts: `training.data.identity`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from serving.policies import POLICIES, UNKNOWN

TOO_SMALL = "too small to judge"


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def bias_slices(labels: np.ndarray, probs: np.ndarray, masks: dict[str, np.ndarray],
                min_support: int) -> list[dict]:
    """One row per (policy, slice): support, subgroup/BPSN/BNSP AUC (None when not judged), status."""
    rows = []
    for j, policy in enumerate(POLICIES):
        known = labels[:, j] != UNKNOWN
        y, p = labels[known, j] == 1, probs[known, j]
        for name, mask in masks.items():
            s = mask[known]
            n_pos, n_neg = int((s & y).sum()), int((s & ~y).sum())
            row = {"policy": policy, "slice": name, "n_pos": n_pos, "n_neg": n_neg,
                   "subgroup_auc": None, "bpsn_auc": None, "bnsp_auc": None, "status": TOO_SMALL}
            if min(n_pos, n_neg) >= min_support:
                bpsn = (s & ~y) | (~s & y)
                bnsp = (s & y) | (~s & ~y)
                row.update(subgroup_auc=_auc(y[s], p[s]), bpsn_auc=_auc(y[bpsn], p[bpsn]),
                           bnsp_auc=_auc(y[bnsp], p[bnsp]), status="judged")
            rows.append(row)
    return rows


def worst_slices(rows: list[dict], k: int = 3) -> list[dict]:
    """Per policy, the k judged slices whose lowest of the three AUCs is lowest (the ones to look at first)."""
    out = []
    for policy in POLICIES:
        judged = [r for r in rows if r["policy"] == policy and r["status"] == "judged"]
        scored = [(min(v for v in (r["subgroup_auc"], r["bpsn_auc"], r["bnsp_auc"]) if v is not None), r)
                  for r in judged if any(v is not None for v in (r["subgroup_auc"], r["bpsn_auc"], r["bnsp_auc"]))]
        out += [{**r, "worst_auc": m} for m, r in sorted(scored, key=lambda t: t[0])[:k]]
    return out
