"""ERASER faithfulness of the reasons (training.evaluation.faithfulness) on the tiny model: the perturbation,
the k of each measure, the values against a hand computation, and the model-randomisation check."""

from __future__ import annotations

import numpy as np
import pytest

from serving.policies import POLICIES
from serving.predictor import Predictor
from serving.reasons import explain, split_words
from training.evaluation.faithfulness import (
    NEUTRAL,
    faithfulness,
    ks_for,
    lexicon,
    model_randomisation,
    rank_by_lexicon,
    replaced,
)

TEXTS = ["you are so stupid and ugly", "i will kill you", "go home you idiot, nobody wants you", "ugly day"]


def test_replacement_and_k():
    text = "you  are 🔪 stupid!"
    words = split_words(text)
    assert replaced(text, words, {1, 3}) == f"you  {NEUTRAL} 🔪 {NEUTRAL}"
    assert replaced(text, words, set()) == text
    assert ks_for(10) == {"k3": 3, "k20%": 2} and ks_for(2) == {"k3": 2, "k20%": 1} and ks_for(26)["k20%"] == 6
    counts = lexicon(["Stupid! are", "stupid! idiot", "you are"])  # stupid!: 2, are: 2, you: 1 (lower-cased)
    assert [words[i].word for i in rank_by_lexicon(words, counts)] == ["are", "stupid!", "you", "🔪"]


def test_measures_match_a_hand_computation(tiny_artifact):
    predictor = Predictor.load(tiny_artifact, path="reference")
    counts = lexicon(["you are stupid", "stupid idiot"])
    result = faithfulness(predictor, TEXTS, "abusive", counts, methods=("occlusion",))
    j = POLICIES.index("abusive")
    text, words = TEXTS[0], split_words(TEXTS[0])
    reasons = explain(predictor, [text], top_k=100)[0].policies["abusive"]
    top3 = {next(i for i, w in enumerate(words) if w.start == r["start"]) for r in reasons[:3]}
    p = predictor.predict_proba([text, replaced(text, words, top3),
                                 replaced(text, words, set(range(len(words))) - top3)])[:, j]
    assert result.values["occlusion"]["comprehensiveness@k3"][0] == pytest.approx(p[0] - p[1], abs=1e-5)
    assert result.values["occlusion"]["sufficiency@k3"][0] == pytest.approx(p[0] - p[2], abs=1e-5)
    # "ugly day": k3 takes both words, so every ranking removes the same words
    last = {r: result.values[r]["comprehensiveness@k3"][3] for r in result.values}
    assert max(last.values()) - min(last.values()) < 1e-6
    summary = result.summary(n_boot=200)
    assert summary["n"] == len(TEXTS) and set(summary["means"]) == {"occlusion", "random", "lexicon"}
    d = summary["occlusion_minus_lexicon"]["comprehensiveness@k3"]
    assert d["ci"][0] <= d["difference"] <= d["ci"][1]


def test_model_randomisation_reports_a_correlation_per_policy(tiny_artifact):
    rho = model_randomisation(Predictor.load(tiny_artifact, path="reference"), TEXTS, layers=1)
    assert set(rho) == set(POLICIES) and all(-1 <= v <= 1 for v in rho.values() if np.isfinite(v))
