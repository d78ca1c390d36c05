"""Evaluation figures (matplotlib, Agg backend: no display needed). Each function returns a Figure; the caller
saves it. Figures only draw numbers computed elsewhere (training.evaluation.evaluate / metrics / bias), except the curves,
which need the per-threshold points scikit-learn computes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from serving.policies import POLICIES, UNKNOWN  # noqa: E402


def _known(labels: np.ndarray, probs: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    keep = labels[:, j] != UNKNOWN
    return labels[keep, j] == 1, probs[keep, j]


def _two_classes(y: np.ndarray) -> bool:
    return 0 < y.sum() < len(y)


def pr_roc_curves(labels: np.ndarray, probs: np.ndarray, title: str = "") -> Figure:
    fig, (ax_pr, ax_roc) = plt.subplots(1, 2, figsize=(11, 4.5))
    for j, policy in enumerate(POLICIES):
        y, p = _known(labels, probs, j)
        if not _two_classes(y):
            continue
        precision, recall, _ = precision_recall_curve(y, p)
        ax_pr.plot(recall, precision, label=f"{policy} (n={len(y)}, base rate {y.mean():.2f})")
        fpr, tpr, _ = roc_curve(y, p)
        ax_roc.plot(fpr, tpr, label=policy)
    ax_roc.plot([0, 1], [0, 1], ls=":", c="grey")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    for ax in (ax_pr, ax_roc):
        ax.legend(fontsize=8, loc="lower left" if ax is ax_pr else "lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def reliability(labels: np.ndarray, raw_probs: np.ndarray, probs: np.ndarray, bins: int = 15,
                ece: dict | None = None) -> Figure:
    """Per policy: observed positive rate vs mean predicted probability per equal-width bin, before and
    after the card's calibration (marker size ~ rows in the bin)."""
    fig, axes = plt.subplots(1, len(POLICIES), figsize=(4.2 * len(POLICIES), 4.2))
    for j, (policy, ax) in enumerate(zip(POLICIES, axes)):
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        for name, values in (("uncalibrated", raw_probs), ("calibrated", probs)):
            y, p = _known(labels, values, j)
            if not len(y):
                continue
            b = np.minimum((p * bins).astype(int), bins - 1)
            count = np.bincount(b, minlength=bins)
            filled = count > 0
            mean_p = np.bincount(b, weights=p, minlength=bins)[filled] / count[filled]
            rate = np.bincount(b, weights=y, minlength=bins)[filled] / count[filled]
            label = name if not ece else f"{name} (ECE {ece.get(policy, {}).get(name, float('nan')):.3f})"
            ax.plot(mean_p, rate, marker="o", label=label)
            ax.scatter(mean_p, rate, s=10 + 200 * count[filled] / count.sum(), alpha=0.3)
        ax.set(title=policy, xlabel="mean predicted probability", ylabel="observed positive rate",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def confusion_matrices(labels: np.ndarray, probs: np.ndarray, thresholds: dict[str, float]) -> Figure:
    fig, axes = plt.subplots(1, len(POLICIES), figsize=(4 * len(POLICIES), 3.8))
    for j, (policy, ax) in enumerate(zip(POLICIES, axes)):
        y, p = _known(labels, probs, j)
        flag = p >= thresholds[policy]
        cm = np.array([[(~y & ~flag).sum(), (~y & flag).sum()], [(y & ~flag).sum(), (y & flag).sum()]])
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="black")
        ax.set(title=f"{policy} @ {thresholds[policy]:.3f}", xticks=[0, 1], yticks=[0, 1],
               xticklabels=["not flagged", "flagged"], yticklabels=["negative", "positive"])
    fig.tight_layout()
    return fig


def slice_auc_bars(rows: list[dict], policy: str) -> Figure:
    """Subgroup / BPSN / BNSP AUC per judged slice of one policy (rows from training.evaluation.bias.bias_slices)."""
    judged = [r for r in rows if r["policy"] == policy and r["status"] == "judged"]
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(judged) + 2), 4))
    if not judged:
        ax.text(0.5, 0.5, f"{policy}: no slice has enough support to judge", ha="center", va="center")
        ax.set_axis_off()
        return fig
    x = np.arange(len(judged))
    for k, (key, label) in enumerate((("subgroup_auc", "subgroup AUC"), ("bpsn_auc", "BPSN AUC"),
                                      ("bnsp_auc", "BNSP AUC"))):
        ax.bar(x + (k - 1) * 0.27, [r[key] or 0 for r in judged], width=0.27, label=label)
    ax.set_xticks(x, [r["slice"].split("/")[-1] for r in judged], rotation=45, ha="right")
    ax.set(ylim=(0, 1), ylabel="AUC", title=f"{policy}: identity slices (judged)")
    ax.axhline(0.5, ls=":", c="grey")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def score_drift(reference: np.ndarray, served: np.ndarray, thresholds: dict[str, float],
                psi: dict[str, float]) -> Figure:
    """Per policy: the served scores' histogram over the reference's (validation) one, densities on a log axis
    (scores pile up near 0), the card's threshold, and the PSI (training.evaluation.monitor)."""
    fig, axes = plt.subplots(1, len(POLICIES), figsize=(4.4 * len(POLICIES), 3.8))
    bins = np.linspace(0, 1, 41)
    for j, (policy, ax) in enumerate(zip(POLICIES, axes)):
        ax.hist(reference[:, j], bins=bins, density=True, histtype="step", lw=1.5,
                label=f"validation (n={len(reference)})")
        ax.hist(served[:, j], bins=bins, density=True, histtype="step", lw=1.5, label=f"served (n={len(served)})")
        ax.axvline(thresholds[policy], ls=":", c="grey", label=f"threshold {thresholds[policy]:.3f}")
        ax.set(title=f"{policy}: PSI {psi[policy]:.3f}", xlabel="calibrated probability", ylabel="density",
               yscale="log", xlim=(0, 1))
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
