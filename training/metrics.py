"""The one metrics module: every model (transformer, TF-IDF), evaluation and promotion score with it.

A base module beside `training.config` and `training.tracking`: validation during training (`training.fit`),
calibration, evaluation and the promotion gate all measure with it, so it imports no stage.

Inputs are `labels` int [N, P] (1 positive, 0 negative, -1 unknown; P = len(POLICIES), POLICIES order) and
`probs` float [N, P]. Unknown labels are masked out per policy: a row unknown for one policy still counts for
the others. A flag is raised when ``prob >= threshold`` (the policy-card rule).

All ranking / threshold metrics are computed by one weighted, vectorized routine (`_weighted_metrics`), so a
plain evaluation (weights = 1) and a bootstrap (weights = resample counts, thousands at once) share the same
code and agree exactly with scikit-learn's `roc_auc_score` / `average_precision_score` (tested).

Metrics that are undefined for a policy (AUCs, recall and F1 without positives, AUCs without negatives) are
omitted from the result rather than reported as 0; `mean_*` keys are always present, averaged over the
policies where they are defined, and NaN if there are none.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np

from serving.artifact import Tier
from serving.policies import POLICIES, UNKNOWN

Thresholds = Mapping[str, "float | tuple[float, str]"]
DEFAULT_THRESHOLD = 0.5
ECE_BINS = 15


def check_inputs(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and values; errors say what is wrong."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != len(POLICIES):
        raise ValueError(f"labels must be [N, {len(POLICIES)}] in POLICIES order {POLICIES}, got {labels.shape}")
    if probs.shape != labels.shape:
        raise ValueError(f"probs shape {probs.shape} != labels shape {labels.shape}")
    if not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError(f"labels must be 1, 0 or -1 (unknown); got values {np.unique(labels).tolist()}")
    if not np.isfinite(probs).all() or probs.min(initial=0) < 0 or probs.max(initial=0) > 1:
        raise ValueError("probs must be finite probabilities in [0, 1]")
    return labels.astype(np.int64), probs


def _threshold(thresholds: Thresholds | None, policy: str) -> float:
    value = (thresholds or {}).get(policy, DEFAULT_THRESHOLD)
    return float(value[0] if isinstance(value, tuple) else value)  # accepts choose_thresholds output too


def _policy_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray, thr: float,
                    prevalence: float | None = None) -> dict[str, np.ndarray]:
    """Metrics of one policy under B weightings at once. y bool [n], p [n], w [B, n] -> {name: [B]}.

    Everything is read off three running sums in descending-score order (weight, weighted positives,
    weighted score): flagging `p >= t` is a prefix of that order, and so is every ECE bin a block of it.
    """
    order = np.argsort(-p, kind="stable")
    y, p, w = y[order], p[order], w[:, order]
    zero = np.zeros((len(w), 1))
    cw = np.concatenate([zero, np.cumsum(w, axis=1)], axis=1)  # [B, n+1]: cw[:, i] = weight of the first i rows
    cy = np.concatenate([zero, np.cumsum(w * y, axis=1)], axis=1)
    cp = np.concatenate([zero, np.cumsum(w * p, axis=1)], axis=1)
    ends = np.r_[np.flatnonzero(np.diff(p)) + 1, len(p)]  # prefix lengths that end a run of tied scores
    tp = cy[:, np.r_[0, ends]]  # [B, K+1] flagged positives at each distinct threshold, from "none flagged"
    fp = cw[:, np.r_[0, ends]] - tp
    pos, neg = tp[:, -1], fp[:, -1]
    n_flagged = int(np.searchsorted(-p, -thr, side="right"))  # rows with p >= thr
    tp_t, fp_t = cy[:, n_flagged], cw[:, n_flagged] - cy[:, n_flagged]
    # Binary ECE on the positive-class probability: equal-width bins, |mean label - mean prob| per bin.
    bins = np.minimum((p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    edges = np.r_[0, np.flatnonzero(np.diff(bins)) + 1, len(p)]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / pos[:, None], fp / neg[:, None]
        roc_auc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
        # Average precision as scikit-learn defines it: sum_k (R_k - R_{k-1}) * P_k, no interpolation.
        precision_k = np.where(tp[:, 1:] + fp[:, 1:] > 0, tp[:, 1:] / (tp[:, 1:] + fp[:, 1:]), 1.0)
        pr_auc = np.sum(np.diff(tpr, axis=1) * precision_k, axis=1)
        precision = np.where(tp_t + fp_t > 0, tp_t / (tp_t + fp_t), 0.0)  # nothing flagged: precision 0
        recall = tp_t / pos
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        f1 = np.where(pos > 0, f1, np.nan)
        ece = np.abs(np.diff(cy[:, edges], axis=1) - np.diff(cp[:, edges], axis=1)).sum(1) / cw[:, -1]
    undefined_auc = (pos == 0) | (neg == 0)
    return {
        "roc_auc": np.where(undefined_auc, np.nan, roc_auc),
        "pr_auc": np.where(undefined_auc, np.nan, pr_auc),
        "precision": precision, "recall": recall, "f1": f1, "ece": ece,
    } | ({} if prevalence is None else {"precision_at_prevalence": precision_at(prevalence, recall, fp_t / neg)})


def precision_at(prevalence: float, tpr: np.ndarray, fpr: np.ndarray) -> np.ndarray:
    """Precision if positives made up `prevalence` of the data (sources are far more abusive than traffic):
    pi*TPR / (pi*TPR + (1 - pi)*FPR), i.e. positives and negatives re-weighted to pi : (1 - pi)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        num = prevalence * tpr
        den = num + (1 - prevalence) * fpr
        return np.where(den > 0, num / den, np.where(np.isnan(den), np.nan, 0.0))  # no flags: precision 0


def _weighted_metrics(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray,
                      thresholds: Thresholds | None, prevalence: float | None = None) -> dict[str, np.ndarray]:
    """{key: [B]} for B row weightings [B, N] (ones for a plain evaluation, counts for bootstrap)."""
    out: dict[str, np.ndarray] = {}
    for j, policy in enumerate(POLICIES):
        known = labels[:, j] != UNKNOWN
        if not known.any():
            continue
        thr = _threshold(thresholds, policy)
        m = _policy_metrics(labels[known, j] == 1, probs[known, j], weights[:, known], thr, prevalence)
        out.update({f"{policy}/{k}": v for k, v in m.items()})
    for name in ("pr_auc", "roc_auc", "f1"):
        cols = [out[f"{p}/{name}"] for p in POLICIES if f"{p}/{name}" in out]
        with warnings.catch_warnings():  # all-NaN columns (a class missing) are expected and handled
            warnings.simplefilter("ignore", RuntimeWarning)
            out[f"mean_{name}"] = np.nanmean(np.stack(cols), axis=0) if cols else np.full(len(weights), np.nan)
    return out


def masked_metrics(labels: np.ndarray, probs: np.ndarray, thresholds: Thresholds | None = None,
                   prevalence: float | None = None) -> dict[str, float]:
    """Per policy: roc_auc, pr_auc (average precision), precision/recall/f1 at the threshold (default 0.5),
    ece, n_pos, n_neg; plus mean_pr_auc, mean_roc_auc, mean_f1. Unknown labels never count.
    With a deployment `prevalence`, also `{policy}/precision_at_prevalence` (see `precision_at`)."""
    labels, probs = check_inputs(labels, probs)
    arrays = _weighted_metrics(labels, probs, np.ones((1, len(labels))), thresholds, prevalence)
    out = {k: float(v[0]) for k, v in arrays.items() if k.startswith("mean_") or not np.isnan(v[0])}
    for j, policy in enumerate(POLICIES):
        out[f"{policy}/n_pos"] = float((labels[:, j] == 1).sum())
        out[f"{policy}/n_neg"] = float((labels[:, j] == 0).sum())
    return dict(sorted(out.items()))


def grouped_metrics(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | list[str],
                    thresholds: Thresholds | None = None, prefix: str = "",
                    prevalence: float | None = None) -> dict[str, float]:
    """masked_metrics overall (`{prefix}{key}`) and per group, e.g. source (`{prefix}{group}/{key}`); a group
    gets no keys for a policy it never labels (most sources label one or two policies)."""
    labels, probs = check_inputs(labels, probs)
    groups = np.asarray(groups)
    out = {f"{prefix}{k}": v for k, v in masked_metrics(labels, probs, thresholds, prevalence).items()}
    for g in sorted(set(groups.tolist())):
        sel = groups == g
        unlabeled = [p for j, p in enumerate(POLICIES) if (labels[sel, j] == UNKNOWN).all()]
        group = masked_metrics(labels[sel], probs[sel], thresholds, prevalence)
        out.update({f"{prefix}{g}/{k}": v for k, v in group.items() if k.split("/")[0] not in unlabeled})
    return out


def resample_counts(rng: np.random.Generator, n_rows: int, n_samples: int) -> np.ndarray:
    """The bootstrap's resamples as row weights [n_samples, n_rows]: resampling rows with replacement ==
    weighting each row by how often it was drawn. The one resampling of the project (metrics, promotion's
    paired bootstrap, the published benchmarks): same rng state -> same resamples."""
    idx = rng.integers(0, n_rows, size=(n_samples, n_rows))
    flat = idx + (np.arange(n_samples) * n_rows)[:, None]
    return np.bincount(flat.ravel(), minlength=n_samples * n_rows).reshape(n_samples, n_rows).astype(np.float64)


def _percentile_ci(samples: dict[str, list[np.ndarray]], alpha: float) -> dict[str, tuple[float, float]]:
    out = {}
    for k, chunks in samples.items():
        v = np.concatenate(chunks)
        v = v[~np.isnan(v)]  # resamples where the metric is undefined (a class drawn zero times)
        if len(v):
            lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
            out[k] = (float(lo), float(hi))
    return out


def bootstrap_ci(labels: np.ndarray, probs: np.ndarray,
                 metric_fn: Callable[[np.ndarray, np.ndarray], "dict[str, float] | float"] | None = None,
                 n: int = 1000, seed: int = 0, alpha: float = 0.05, thresholds: Thresholds | None = None,
                 prevalence: float | None = None,
                 chunk: int = 100) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap (1 - alpha) CIs, resampling tweets (rows) with replacement.

    metric_fn None: every masked_metrics key (except counts), computed for `chunk` resamples at once through
    the weighted path (fast). Otherwise metric_fn(labels[idx], probs[idx]) -> dict or float (key "value")
    is called per resample, for custom metrics (e.g. a benchmark's macro-F1).
    """
    labels, probs = check_inputs(labels, probs)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {}
    if metric_fn is None:
        for start in range(0, n, chunk):
            w = resample_counts(rng, len(labels), min(chunk, n - start))
            for k, v in _weighted_metrics(labels, probs, w, thresholds, prevalence).items():
                samples.setdefault(k, []).append(v)
        return _percentile_ci(samples, alpha)
    for _ in range(n):
        idx = rng.integers(0, len(labels), size=len(labels))
        value = metric_fn(labels[idx], probs[idx])
        for k, v in (value if isinstance(value, Mapping) else {"value": value}).items():
            samples.setdefault(k, []).append(np.atleast_1d(np.float64(v)))
    return _percentile_ci(samples, alpha)


def paired_bootstrap_diff(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, n: int = 1000,
                          seed: int = 0, alpha: float = 0.05, thresholds_a: Thresholds | None = None,
                          thresholds_b: Thresholds | None = None,
                          chunk: int = 100) -> dict[str, tuple[float, float]]:
    """CI of metric(b) - metric(a) with both models scored on the same resamples (promotion's evidence)."""
    labels, probs_a = check_inputs(labels, probs_a)
    _, probs_b = check_inputs(labels, probs_b)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, chunk):
        w = resample_counts(rng, len(labels), min(chunk, n - start))
        a = _weighted_metrics(labels, probs_a, w, thresholds_a)
        b = _weighted_metrics(labels, probs_b, w, thresholds_b)
        for k in a.keys() & b.keys():
            samples.setdefault(k, []).append(b[k] - a[k])
    return _percentile_ci(samples, alpha)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Binary ECE of one policy's positive-class probability (labels 1/0/-1, -1 ignored):
    sum over equal-width bins of (share of rows) * |positive rate - mean probability|. NaN if no labels."""
    labels, probs = np.asarray(labels).ravel(), np.asarray(probs, dtype=np.float64).ravel()
    known = labels != UNKNOWN
    y, p = labels[known] == 1, probs[known]
    if not len(y):
        return float("nan")
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, weights=y, minlength=bins) - np.bincount(b, weights=p, minlength=bins))
    return float(gap.sum() / count.sum())


def _operating_points(y: np.ndarray, p: np.ndarray, prevalence: float | None):
    """Every distinct threshold (descending) with precision, recall, F1 of flagging p >= threshold; with a
    deployment prevalence, precision (so F1) is the one at that prevalence (`precision_at`)."""
    order = np.argsort(-p, kind="stable")
    y, p = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    tp, fp = np.cumsum(y)[last].astype(np.float64), np.cumsum(~y)[last].astype(np.float64)
    tpr, fpr = tp / tp[-1], fp / fp[-1]
    precision = tp / (tp + fp) if prevalence is None else precision_at(prevalence, tpr, fpr)
    with np.errstate(invalid="ignore"):
        f1 = np.where(precision + tpr > 0, 2 * precision * tpr / (precision + tpr), 0.0)
    return p[last], precision, tpr, f1


def choose_thresholds(labels: np.ndarray, probs: np.ndarray, method: str = "max_f1", target: float | None = None,
                      prevalence: float | None = None, on: str = "validation") -> dict[str, tuple[float, str]]:
    """Per-policy decision thresholds (flag when prob >= threshold) with a description of how they were chosen.

    method: max_f1 (default); precision = the lowest threshold whose precision >= target (most recall at that
    precision); recall = the highest threshold whose recall >= target. prevalence (0-1, optional) is the
    positive rate expected in deployment: precision (and so F1) is computed as if positives made up that
    share (see `_operating_points`). Choose on calibrated probabilities: those are what the card's threshold
    is compared with. A policy whose labels lack a class keeps 0.5, said so in its description.
    """
    if method not in ("max_f1", "precision", "recall"):
        raise ValueError(f"threshold method {method!r}: expected max_f1, precision or recall")
    if method != "max_f1" and (target is None or not 0 < target <= 1):
        raise ValueError(f"threshold method {method!r} needs a target in (0, 1], got {target!r}")
    if prevalence is not None and not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence!r}")
    labels, probs = check_inputs(labels, probs)
    at = "" if prevalence is None else f" at prevalence {prevalence:g}"
    out: dict[str, tuple[float, str]] = {}
    for j, policy in enumerate(POLICIES):
        known = labels[:, j] != UNKNOWN
        y, p = labels[known, j] == 1, probs[known, j]
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos == 0 or n_neg == 0:
            warnings.warn(f"{policy}: {on} has {n_pos} positive / {n_neg} negative labels; threshold stays 0.5")
            out[policy] = (DEFAULT_THRESHOLD, f"default 0.5 ({on} has {n_pos} pos / {n_neg} neg labels)")
            continue
        scores, precision, recall, f1 = _operating_points(y, p, prevalence)
        if method == "max_f1":
            k, how = int(np.argmax(f1)), f"max F1{at}"
        elif method == "precision":
            ok = np.flatnonzero(precision >= target)
            if len(ok):
                k, how = int(ok[-1]), f"lowest threshold with precision >= {target:g}{at}"
            else:
                k = int(np.flatnonzero(precision == precision.max())[-1])
                how = f"precision target {target:g}{at} NOT reached; max precision"
                warnings.warn(f"{policy}: no threshold reaches precision {target:g} on {on}; using max precision")
        else:
            k, how = int(np.flatnonzero(recall >= target)[0]), f"highest threshold with recall >= {target:g}"
        out[policy] = (float(scores[k]), f"{how} on {on} ({n_pos} pos / {n_neg} neg): precision "
                       f"{precision[k]:.3f}, recall {recall[k]:.3f}, F1 {f1[k]:.3f}{at}")
    return out


def choose_tier(labels: np.ndarray, probs: np.ndarray, target: float, *, prevalence: float | None = None,
                min_positives: int = 1, on: str = "validation") -> Tier:
    """One policy's decision tier: the lowest threshold whose precision (at `prevalence`, else the split's mix)
    reaches `target` with >= `min_positives` true positives at or above it (most recall at that precision).
    Unreachable: a disabled tier (threshold None) whose note gives the best precision there was."""
    known = labels != UNKNOWN
    y, p = labels[known] == 1, probs[known]
    at = "" if prevalence is None else f" at prevalence {prevalence:g}"
    tier = Tier(target_precision=target, prevalence=prevalence)
    if not y.any() or y.all():
        tier.note = f"off: {on} has {int(y.sum())} pos / {int((~y).sum())} neg labels"
        return tier
    scores, precision, recall, _ = _operating_points(y, p, prevalence)
    supported = recall * y.sum() >= min_positives - 1e-9
    ok = np.flatnonzero((precision >= target) & supported)
    if not len(ok):
        best = float(precision[supported].max()) if supported.any() else float("nan")
        tier.note = (f"off: precision {target:g}{at} not reached on {on} with >= {min_positives} positives "
                     f"(best {best:.3f})")
        return tier
    k = int(ok[-1])
    tier.threshold, tier.precision, tier.recall = float(scores[k]), float(precision[k]), float(recall[k])
    tier.note = (f"lowest threshold with precision >= {target:g}{at} on {on} ({int(y.sum())} pos / "
                 f"{int((~y).sum())} neg)")
    return tier


def ece_per_policy(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """{policy: ECE} over each policy's known labels (NaN where a policy has none)."""
    return {p: expected_calibration_error(labels[:, j], probs[:, j]) for j, p in enumerate(POLICIES)}
