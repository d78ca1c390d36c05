"""Reasons: which words of a text drove each policy's calibrated score.

A *word* is a maximal run of non-space characters of the text as sent (emoji included); its `start` / `end` are
character offsets into that text, so `text[start:end] == word`. Each word gets a signed contribution per policy:

- `occlusion` (served): the text's calibrated score minus the score of the text with that word deleted, all
  copies scored in one batch through the same Predictor path (in the service: the same micro-batcher) as the
  decision. The unmasked copy is the first row of that batch, and it is the score the response returns.
- `integrated_gradients` (offline, `tweetguard explain --method integrated_gradients`): Captum's
  LayerIntegratedGradients on the word embeddings of the calibrated score, from an all-[PAD] baseline; sub-word
  pieces roll up (sum) to their word. Needs the torch model, so it is not served.

A text longer than the model window is scored on its head (the plain request truncates and marks it); words that
start past the window are listed in `outside_window`, never attributed, and explaining does not change that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from serving.policies import POLICIES
from serving.preprocess import normalize_tweet

METHODS = ("occlusion", "integrated_gradients")
STATEMENT_SCHEMA_VERSION = 1  # statement_of_reasons' fields; bump on any change (docs/serving.md)
SERVED_METHODS = ("occlusion",)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Word:
    word: str
    start: int
    end: int


@dataclass
class Reasons:
    """One text's reasons: per policy the top words (highest contribution first), and the words past the window."""

    method: str
    score: dict[str, float]  # the calibrated scores the contributions explain (what the decision returned)
    policies: dict[str, list[dict]] = field(default_factory=dict)  # {policy: [{word, start, end, contribution}]}
    outside_window: list[dict] = field(default_factory=list)  # [{word, start, end}]

    def as_dict(self) -> dict:
        return {"method": self.method, "policies": self.policies, "outside_window": self.outside_window}


def split_words(text: str) -> list[Word]:
    """The words of `text` as sent: maximal runs of non-space characters with their character offsets."""
    return [Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def words_in_window(text: str, words: list[Word], tokenizer, max_length: int) -> int:
    """How many of `words` (in order) the model window holds: a word is inside when the normalized text up to
    its end still fits in `max_length` tokens (special tokens included). A text that fits holds all of them."""
    def fits(prefixes: list[str]) -> list[bool]:
        ids = tokenizer([normalize_tweet(p) for p in prefixes], add_special_tokens=True)["input_ids"]
        return [len(x) <= max_length for x in ids]

    if not words or fits([text])[0]:
        return len(words)
    inside = fits([text[:w.end] for w in words])
    return inside.index(False) if False in inside else len(words)


def occlusion_texts(text: str, words: list[Word]) -> list[str]:
    """The text with each word deleted (one copy per word, in order); normalization collapses the gap."""
    return [text[:w.start] + text[w.end:] for w in words]


def rank(words: list[Word], contributions: np.ndarray, top_k: int) -> dict[str, list[dict]]:
    """{policy: the top_k words by contribution, highest first (ties: earlier word first)} from [W, P]."""
    out = {}
    for j, policy in enumerate(POLICIES):
        order = sorted(range(len(words)), key=lambda i: (-contributions[i, j], i))[:top_k]
        out[policy] = [{"word": words[i].word, "start": words[i].start, "end": words[i].end,
                        "contribution": float(contributions[i, j])} for i in order]
    return out


def occlusion_reasons(text: str, words: list[Word], n_inside: int, probs: np.ndarray, top_k: int) -> Reasons:
    """Reasons from the occlusion batch's calibrated probabilities [1 + n_inside, P]: row 0 the text as sent,
    row 1 + i the text without word i (words past the window are not occluded)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (1 + n_inside, len(POLICIES)):
        raise ValueError(f"occlusion batch of shape {probs.shape}, expected {(1 + n_inside, len(POLICIES))}")
    contributions = probs[0][None, :] - probs[1:]
    return Reasons("occlusion", dict(zip(POLICIES, map(float, probs[0]))),
                   rank(words[:n_inside], contributions, top_k),
                   [{"word": w.word, "start": w.start, "end": w.end} for w in words[n_inside:]])


def occlusion_plan(text: str, tokenizer, max_length: int) -> tuple[list[Word], int, list[str]]:
    """(words, how many are inside the window, the texts to score: the text itself, then one copy per inside
    word with that word deleted)."""
    words = split_words(text)
    n_inside = words_in_window(text, words, tokenizer, max_length)
    return words, n_inside, [text, *occlusion_texts(text, words[:n_inside])]


def explain(predictor, texts: Sequence[str], *, method: str = "occlusion", top_k: int = 5,
            score: Callable[[list[str]], np.ndarray] | None = None,
            policies: Sequence[str] | None = None) -> list[Reasons]:
    """Reasons for each text by `method` (one of METHODS). `predictor`: a `serving.predictor.Predictor`;
    `score` (occlusion only): calibrated probabilities of a list of texts, default `predictor.predict_proba`.
    Each text's occlusion copies are scored in one call with the text. `policies` (integrated gradients only,
    one pass each; occlusion gets every policy from the same batch): the policies to attribute, default all."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: methods are {METHODS}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if method == "integrated_gradients":
        from serving.gradients import integrated_gradients_reasons  # captum + torch model: offline only

        return integrated_gradients_reasons(predictor, list(texts), top_k=top_k, policies=policies)
    score = score or predictor.predict_proba
    out = []
    for text in texts:
        words, n_inside, batch = occlusion_plan(text, predictor.tokenizer, predictor.max_length)
        out.append(occlusion_reasons(text, words, n_inside, score(batch), top_k))
    return out


def statement_of_reasons(policy: str, *, score: float, flagged: bool, action: str, flag_threshold: float,
                         tier_thresholds: dict, words: list[dict], card, version: str,
                         decision_id: str | None = None) -> dict:
    """The statement of reasons for one text and policy (what a moderation tool tells an author, cf. the EU
    Digital Services Act's article 17): the policy and its definition, the decision (flag, action, the thresholds
    used), the calibrated score, the words that drove it, the model and its policy card version, the decision id
    when the service issues one, and that the score was automated while `review` means a person decides.
    Versioned by STATEMENT_SCHEMA_VERSION beside the policy card's schema."""
    human = {"review": "queued for a person, who decides; nothing is done to the post by the model alone",
             "remove": "the model's score reached the remove tier: an automated decision, open to appeal",
             "none": "no tier reached: the model takes no action"}[action]
    return {
        "schema_version": STATEMENT_SCHEMA_VERSION, "policy": policy,
        "policy_definition": card.policy(policy).description,
        "score": score, "score_meaning": "calibrated probability that the text violates the policy",
        "flagged": flagged, "action": action, "flag_threshold": flag_threshold,
        "tier_thresholds": dict(tier_thresholds), "top_words": words, "automated": True, "human_review": human,
        "model": {"name": card.model_name, "version": version, "policy_card_schema": card.schema_version},
        "decision_id": decision_id,
    }
