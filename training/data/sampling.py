"""Choosing what to label: the strategies of `tweetguard sample` (training.release.sample reads and writes the
files; training.pipeline.simulate runs them with simulated reviewers). See training.release.sample for what each
strategy does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from serving.policies import POLICIES
from training.data.sources import build_index, index_key, similar, text_key

STRATEGIES = ("uncertainty", "disagreement", "stratified", "random")
BANDS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0000001)


@dataclass
class Sampled:
    rows: list[dict]
    candidates: int  # distinct, unlabelled texts the sample was drawn from
    excluded_labelled: int
    excluded_repeats: int


def labelled_keys(feedback_db: str | None) -> tuple[set[str], set[str]]:
    """(text keys of stored verdict texts, sha256s of every verdict's decided text) in the feedback store."""
    if not feedback_db:
        return set(), set()
    from serving.feedback import FeedbackStore

    rows = FeedbackStore(feedback_db).rows()
    return {text_key(r["text"]) for r in rows if r["text"]}, {r["text_sha256"] for r in rows}


def _order(strategy: str, probs: np.ndarray, thresholds: np.ndarray, other: np.ndarray | None,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(candidate indices in the order the strategy takes them, the strategy's key per candidate)."""
    if strategy == "uncertainty":
        key = np.abs(probs - thresholds[None, :]).min(axis=1)
        return np.lexsort((rng.random(len(key)), key)), key
    if strategy == "disagreement":
        key = np.abs(probs - other).max(axis=1)
        return np.lexsort((rng.random(len(key)), -key)), key
    key = rng.random(len(probs))
    return np.argsort(key, kind="stable"), key


def sample(texts: list[str], probs: np.ndarray, thresholds: dict[str, float], *, n: int, strategy: str,
           seed: int = 0, other: np.ndarray | None = None, labelled: tuple[set[str], set[str]] = (set(), set()),
           ) -> Sampled:
    """Pick `n` of `texts` (scored `probs` [N, P]) by `strategy`; see the module. Returns the chosen rows as
    {"index", "score", "stratum", "weight"} in the order chosen."""
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy {strategy!r}: strategies are {list(STRATEGIES)}")
    if strategy == "disagreement" and other is None:
        raise ValueError("--strategy disagreement needs --challenger REF (a second model to disagree with)")
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    keys = [text_key(t) for t in texts]
    label_keys, label_shas = labelled
    candidates, seen, repeats, done = [], build_index([]), 0, 0
    for i, (t, k) in enumerate(zip(texts, keys)):
        if k in label_keys or hashlib.sha256(t.encode("utf-8")).hexdigest() in label_shas:
            done += 1
            continue
        if not k or similar(k, seen) is not None:  # an exact or near repeat of an earlier candidate
            repeats += 1
            continue
        index_key(seen, k)
        candidates.append(i)
    idx = np.asarray(candidates, dtype=np.int64)
    p = probs[idx]
    chosen: list[dict] = []
    if strategy == "stratified":
        per_policy = [n // len(POLICIES) + (j < n % len(POLICIES)) for j in range(len(POLICIES))]
        taken: set[int] = set()
        for j, policy in enumerate(POLICIES):
            band = np.digitize(p[:, j], BANDS[1:-1])
            per_band = [per_policy[j] // (len(BANDS) - 1) + (b < per_policy[j] % (len(BANDS) - 1))
                        for b in range(len(BANDS) - 1)]
            for b, want in enumerate(per_band):
                members = [int(k) for k in np.flatnonzero(band == b) if int(idx[k]) not in taken]
                pick = [members[k] for k in rng.permutation(len(members))[:want]]
                for k in pick:
                    taken.add(int(idx[k]))
                    chosen.append({"index": int(idx[k]), "score": float(p[k, j]),
                                   "stratum": f"{policy}:{BANDS[b]:.1f}-{min(BANDS[b + 1], 1.0):.1f}",
                                   "weight": len(members) / len(pick)})
    else:
        thr = np.array([thresholds[q] for q in POLICIES])
        order, key = _order(strategy, p, thr, None if other is None else other[idx], rng)
        weight = len(idx) / min(n, len(idx)) if len(idx) else 0.0
        for k in order[:n]:
            chosen.append({"index": int(idx[k]), "score": float(key[k]), "stratum": "",
                           "weight": weight if strategy == "random" else None})
    return Sampled(chosen, len(idx), done, repeats)
