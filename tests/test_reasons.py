"""Reasons (serving.reasons): words and their offsets, occlusion through the Predictor, the model window,
integrated gradients (Captum) offline, and the errors of a bad call."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from serving.policies import POLICIES
from serving.predictor import Predictor
from serving.reasons import explain, occlusion_texts, split_words, words_in_window


@hsettings(max_examples=300)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_word_offsets_are_the_text_as_sent(text):
    """For any Unicode text: text[start:end] == word, words hold no whitespace, are in order without overlap,
    and together they are every non-space character."""
    words = split_words(text)
    end = 0
    for w in words:
        assert text[w.start:w.end] == w.word and w.word and not any(c.isspace() for c in w.word)
        assert w.start >= end
        end = w.end
    assert "".join(w.word for w in words) == "".join(c for c in text if not c.isspace())


def test_emoji_and_punctuation_stay_in_their_word():
    text = "i will 🔪 you,  @bob!!\tok"
    words = split_words(text)
    assert [w.word for w in words] == ["i", "will", "🔪", "you,", "@bob!!", "ok"]
    assert occlusion_texts(text, words)[2] == "i will  you,  @bob!!\tok"


def test_occlusion_contributions_are_score_differences(tiny_artifact, tiny_spec):
    predictor = Predictor.load(tiny_artifact, path="reference")
    text = f"@bob you {tiny_spec.words[0]} {tiny_spec.words[1]} go away {tiny_spec.words[2]}"
    reasons = explain(predictor, [text], top_k=3)[0]
    words = split_words(text)
    alone = predictor.predict_proba([text] + occlusion_texts(text, words))
    assert reasons.method == "occlusion" and reasons.outside_window == []
    assert reasons.score == pytest.approx(dict(zip(POLICIES, alone[0])), abs=1e-6)
    for j, policy in enumerate(POLICIES):
        got = reasons.policies[policy]
        assert len(got) == 3 and [r["contribution"] for r in got] == sorted((r["contribution"] for r in got),
                                                                           reverse=True)
        for r in got:
            i = next(k for k, w in enumerate(words) if w.start == r["start"])
            assert text[r["start"]:r["end"]] == r["word"]
            assert r["contribution"] == pytest.approx(alone[0, j] - alone[1 + i, j], abs=1e-5)


def test_words_past_the_window_are_listed_not_attributed(tiny_artifact, tiny_spec):
    predictor = Predictor.load(tiny_artifact, path="reference")
    text = " ".join(tiny_spec.words[i % len(tiny_spec.words)] for i in range(60))  # far past 32 tokens
    assert predictor.predict([text])[0]["truncated"]
    words = split_words(text)
    n_inside = words_in_window(text, words, predictor.tokenizer, predictor.max_length)
    assert 0 < n_inside < len(words)
    reasons = explain(predictor, [text], top_k=100)[0]
    assert [w["start"] for w in reasons.outside_window] == [w.start for w in words[n_inside:]]
    for policy in POLICIES:
        assert {r["start"] for r in reasons.policies[policy]} == {w.start for w in words[:n_inside]}
    # the window boundary: the text up to the last word inside fits, one more word does not
    ids = predictor.tokenizer([text[:words[n_inside - 1].end], text[:words[n_inside].end]])["input_ids"]
    assert len(ids[0]) <= predictor.max_length < len(ids[1])


def test_integrated_gradients_add_up_to_the_calibrated_difference(tiny_artifact, tiny_spec):
    predictor = Predictor.load(tiny_artifact, path="reference")
    text = "you kill ugly now"  # four words of the tiny vocabulary: four pieces, no mention to collapse
    ig = explain(predictor, [text], method="integrated_gradients", top_k=10)[0]
    occ = explain(predictor, [text], top_k=10)[0]
    assert ig.method == "integrated_gradients"
    assert {r["word"] for r in ig.policies["abusive"]} == {w.word for w in split_words(text)}
    # IG's completeness, carried to the calibrated score: contributions sum to p(x) - p(baseline).
    import torch

    from serving.artifact import calibrate
    from serving.gradients import word_pieces
    from serving.modeling import load_model

    tok = predictor.tokenizer
    ids, owner, n_inside = word_pieces(split_words(text), tok, predictor.max_length)
    assert n_inside == 4 and owner[0] == owner[-1] == -1 and set(owner[1:-1]) == {0, 1, 2, 3}
    base_ids = [tok.cls_token_id] + [tok.pad_token_id] * (len(ids) - 2) + [tok.sep_token_id]

    with torch.no_grad():
        base_logits = load_model(tiny_artifact)(input_ids=torch.tensor([base_ids])).logits.double().numpy()
    base = calibrate(base_logits, predictor.card)[0]
    for j, policy in enumerate(POLICIES):
        total = sum(r["contribution"] for r in ig.policies[policy])
        assert total == pytest.approx(ig.score[policy] - base[j], abs=0.02)
        assert ig.score[policy] == pytest.approx(occ.score[policy], abs=1e-5)  # the same input as served here


def test_bad_calls_name_the_problem(tiny_artifact):
    predictor = Predictor.load(tiny_artifact, path="reference")
    with pytest.raises(ValueError, match="method 'shap'"):
        explain(predictor, ["a"], method="shap")
    with pytest.raises(ValueError, match="top_k"):
        explain(predictor, ["a"], top_k=0)
    empty = explain(predictor, [""])[0]
    assert all(v == [] for v in empty.policies.values()) and np.isfinite(list(empty.score.values())).all()


def test_integrated_gradients_for_some_policies_only(tiny_artifact):
    predictor = Predictor.load(tiny_artifact, path="reference")
    one = explain(predictor, ["you kill ugly now"], method="integrated_gradients", policies=["violence"])[0]
    full = explain(predictor, ["you kill ugly now"], method="integrated_gradients")[0]
    assert one.policies["abusive"] == one.policies["harassment"] == [] and one.policies["violence"]
    assert [r["word"] for r in one.policies["violence"]] == [r["word"] for r in full.policies["violence"]]
