"""`tweetguard sample`: choose which texts are worth a label.

    tweetguard sample [--model REF] --input FILE [--text-column text] --n N
        --strategy uncertainty|disagreement|stratified|random --output FILE [--seed 0]
        [--challenger REF] [--feedback-db URL]

The input is a .csv/.tsv/.jsonl of texts, or the service's score log written with TWEETGUARD_LOG_TEXTS (its
`text` field); formats and bad-row reports as in `tweetguard predict`. Every text is scored by the model
(default the champion) through the Predictor. Strategies:
- `uncertainty`: closest to a policy's flag threshold first (min over policies of |p − threshold|);
- `disagreement`: where the model and `--challenger` (a challenger, or the distilled fast tier) differ most
  (max over policies of |p_a − p_b|);
- `stratified`: per policy, equal shares of the n over five score bands (0-.2, .2-.4, ...), drawn at random
  within each; each row carries its stratum and its sampling weight (stratum size / rows drawn from it), so a
  labelled sample estimates precision at any threshold or tier without bias;
- `random`: uniform, weight N / n: the baseline every strategy is compared with.
Deterministic for a seed. Exact and near repeats (the project's near-duplicate rule on text keys) are sampled
once, and a text already labelled in the feedback store (`--feedback-db`: same text key as a stored verdict's
text, or same sha256 as a verdict's decision) is never sampled. Output: the input columns plus
`<policy>_probability`, `sample_rank`, `sample_strategy`, `sample_score` (the strategy's key), `sample_stratum` and
`sample_weight`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.policies import POLICIES
from training.data.sources import build_index, index_key, similar, text_key
from training.release.predict import read_input, table_delimiter, table_texts, write_table

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


def sample_file(predictor, input_path: str | Path, output_path: str | Path, *, n: int, strategy: str,
                text_column: str = "text", seed: int = 0, challenger=None, feedback_db: str | None = None) -> Sampled:
    """Read, score, sample and write (atomically); see the module."""
    input_path, output_path = Path(input_path), Path(output_path)
    out_format = table_delimiter(output_path)
    table = read_input(input_path)
    texts = table_texts(table, text_column, input_path)  # any bad row fails, naming its line
    probs = predictor.predict_proba(texts)
    other = None if challenger is None else challenger.predict_proba(texts)
    result = sample(texts, probs, predictor.card.thresholds, n=n, strategy=strategy, seed=seed, other=other,
                    labelled=labelled_keys(feedback_db))
    extra = [f"{p}_probability" for p in POLICIES] + ["sample_rank", "sample_strategy", "sample_score",
                                                      "sample_stratum", "sample_weight"]
    rows = []
    for rank, c in enumerate(result.rows, 1):
        row = dict(table.rows[c["index"]])
        row.update({f"{p}_probability": float(probs[c["index"], j]) for j, p in enumerate(POLICIES)})
        row.update(sample_rank=rank, sample_strategy=strategy, sample_score=c["score"],
                   sample_stratum=c["stratum"], sample_weight=c["weight"])
        rows.append(row)
    write_table(output_path, out_format, table.columns + [c for c in extra if c not in table.columns], iter(rows))
    return result
