"""How faithful are the reasons (serving.reasons)? ERASER's measures (DeYoung et al. 2020) on a policy's positives.

For one text, one policy and a ranking of its words (most important first), with r_k its top k words:
- comprehensiveness(k) = p(x) − p(x with r_k replaced): high when the chosen words carry the score;
- sufficiency(k)       = p(x) − p(x with every word *but* r_k replaced): low when they suffice.
Words are replaced by a neutral word (`NEUTRAL`), a perturbation neither method chose by (occlusion deletes
words; integrated gradients integrates from [PAD] embeddings). k = 3 words and k = 20% of the text's words
(at least one). Every score is the served calibrated probability (Predictor.predict_proba).

Rankings compared: occlusion and integrated gradients (serving.reasons.explain, all words ranked), random words
(seeded), and a lexicon: the text's words ranked by how often they occur in that policy's training positives.
`model_randomisation` is Adebayo et al.'s (2018) sanity check: re-initialise the top encoder layers and the
head, explain again, and report the Spearman correlation of the word contributions (a faithful method changes).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from serving.policies import POLICIES
from serving.reasons import Word, explain, split_words

NEUTRAL = "something"
RANKINGS = ("occlusion", "integrated_gradients", "random", "lexicon")


def ks_for(n_words: int) -> dict[str, int]:
    """The k of each measure for a text of n words: 3 words, and 20% of them (at least 1), never more than n."""
    return {"k3": min(3, n_words), "k20%": min(n_words, max(1, math.ceil(0.2 * n_words)))}


def replaced(text: str, words: list[Word], chosen: set[int]) -> str:
    """`text` with the chosen words replaced by NEUTRAL (the rest as sent)."""
    out, at = [], 0
    for i, w in enumerate(words):
        if i in chosen:
            out += [text[at:w.start], NEUTRAL]
            at = w.end
    return "".join(out + [text[at:]])


def lexicon(texts: Sequence[str]) -> Counter:
    """Lower-cased word counts over a policy's training positives (the lexicon baseline's ranking)."""
    return Counter(w.word.lower() for t in texts for w in split_words(t))


def rank_by_lexicon(words: list[Word], counts: Counter) -> list[int]:
    return sorted(range(len(words)), key=lambda i: (-counts.get(words[i].word.lower(), 0), i))


def rank_by_reasons(words: list[Word], policy_reasons: list[dict]) -> list[int]:
    """Word indices in the order a method ranked them (its reasons list every word inside the window)."""
    index = {w.start: i for i, w in enumerate(words)}
    return [index[r["start"]] for r in policy_reasons]


@dataclass
class Faithfulness:
    """Per ranking and measure ("comprehensiveness@k3", ...): the per-text values, in the order of the texts."""

    policy: str
    values: dict[str, dict[str, np.ndarray]]

    def summary(self, n_boot: int = 1000, seed: int = 0, against: str = "lexicon",
                method: str = "occlusion") -> dict:
        """Means per ranking and measure, and `method` − `against` per measure with a paired bootstrap 95% CI."""
        out = {r: {m: float(v.mean()) for m, v in ms.items()} for r, ms in self.values.items()}
        rng = np.random.default_rng(seed)
        diffs = {}
        for m in self.values[method]:
            d = self.values[method][m] - self.values[against][m]
            boots = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(n_boot)])
            diffs[m] = {"difference": float(d.mean()), "ci": [float(np.quantile(boots, 0.025)),
                                                              float(np.quantile(boots, 0.975))]}
        return {"policy": self.policy, "n": len(next(iter(self.values[method].values()))), "means": out,
                f"{method}_minus_{against}": diffs}


def faithfulness(predictor, texts: Sequence[str], policy: str, counts: Counter, *, seed: int = 0,
                 methods: Sequence[str] = ("occlusion", "integrated_gradients")) -> Faithfulness:
    """ERASER's comprehensiveness and sufficiency at k3 and k20% of `policy` on `texts` (its positives), for each
    of `methods`, random words and the lexicon `counts`. Texts past the model window use their inside words."""
    j = POLICIES.index(policy)
    rng = np.random.default_rng(seed)
    rankings: dict[str, list[list[int]]] = {r: [] for r in (*methods, "random", "lexicon")}
    all_words = []
    for method in methods:
        found = explain(predictor, texts, method=method, top_k=10_000, policies=[policy])
        for text, reasons in zip(texts, found):
            rankings[method].append(rank_by_reasons(split_words(text), reasons.policies[policy]))
    for i, text in enumerate(texts):
        words = split_words(text)
        n_inside = len(rankings[methods[0]][i]) if methods else len(words)
        all_words.append(words)
        rankings["random"].append(list(rng.permutation(n_inside)))
        rankings["lexicon"].append(rank_by_lexicon(words[:n_inside], counts))
    # One Predictor call for every perturbed copy: the text, then per ranking and k its two copies.
    batch, where = list(texts), {}
    for r, per_text in rankings.items():
        for i, (text, words, order) in enumerate(zip(texts, all_words, per_text)):
            for name, k in ks_for(len(order)).items():
                top = set(order[:k])
                rest = set(range(len(words))) - top
                where[(r, i, name)] = len(batch)
                batch += [replaced(text, words, top), replaced(text, words, rest)]
    probs = predictor.predict_proba(batch)[:, j]
    values: dict[str, dict[str, np.ndarray]] = {}
    for r in rankings:
        values[r] = {}
        for name in ks_for(1):
            at = [where[(r, i, name)] for i in range(len(texts))]
            values[r][f"comprehensiveness@{name}"] = np.array([probs[i] - probs[a] for i, a in enumerate(at)])
            values[r][f"sufficiency@{name}"] = np.array([probs[i] - probs[a + 1] for i, a in enumerate(at)])
    return Faithfulness(policy, values)


def model_randomisation(predictor, texts: Sequence[str], *, layers: int = 2, method: str = "occlusion",
                        seed: int = 0) -> dict[str, float]:
    """Mean Spearman correlation, per policy, between each text's word contributions from the model and from a
    copy whose top `layers` encoder layers and head are re-initialised (texts with fewer than 3 words skipped)."""
    import torch

    from serving.modeling import load_model
    from serving.predictor import Predictor

    model = load_model(predictor.model_dir)
    torch.manual_seed(seed)
    encoder_layers = model.base_model.encoder.layer
    for module in [*encoder_layers[-layers:], model.classifier]:
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(predictor.model_dir, Path(tmp) / "model"))
        model.save_pretrained(copy)
        randomised = Predictor.load(copy, path="reference")
        theirs = explain(randomised, texts, method=method, top_k=10_000)
    ours = explain(predictor, texts, method=method, top_k=10_000)
    out = {}
    for policy in POLICIES:
        rhos = []
        for a, b in zip(ours, theirs):
            if len(a.policies[policy]) < 3:
                continue
            x = {r["start"]: r["contribution"] for r in a.policies[policy]}
            y = {r["start"]: r["contribution"] for r in b.policies[policy]}
            keys = sorted(x)
            rho = spearmanr([x[k] for k in keys], [y[k] for k in keys]).statistic
            if np.isfinite(rho):
                rhos.append(rho)
        out[policy] = float(np.mean(rhos)) if rhos else float("nan")
    return out

