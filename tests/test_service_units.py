"""Service parts as plain objects (no server): OpenAI mapping, request schemas, settings."""

from __future__ import annotations

import pytest
from openai.types import ModerationCreateResponse
from openai.types.moderation import Categories, CategoryAppliedInputTypes, CategoryScores
from pydantic import ValidationError

from serving.cache import ScoreCache
from serving.moderation import MODELED, OPENAI_CATEGORIES, UNMODELED, map_scores, moderation_response
from serving.schemas import ClassifyRequest, ModerationRequest, ServiceSettings, TextResult, split_overrides


def _wire_names(model) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_categories_are_exactly_openais():
    # If the openai client adds a category, strict clients would miss it in our responses: fail here first.
    for model in (Categories, CategoryScores, CategoryAppliedInputTypes):
        assert set(OPENAI_CATEGORIES) == _wire_names(model)
    assert set(MODELED) | set(UNMODELED) == set(OPENAI_CATEGORIES) and not set(MODELED) & set(UNMODELED)


@pytest.mark.parametrize(
    "scores, flags, want_scores, want_flags",
    [
        (  # abusive alone drives harassment; nothing threatening
            {"abusive": 0.9, "harassment": 0.2, "violence": 0.1},
            {"abusive": True, "harassment": False, "violence": False},
            {"harassment": 0.9, "harassment/threatening": 0.1, "violence": 0.1},
            {"harassment": True, "harassment/threatening": False, "violence": False},
        ),
        (  # a targeted threat: both harassment and violence
            {"abusive": 0.3, "harassment": 0.8, "violence": 0.7},
            {"abusive": False, "harassment": True, "violence": True},
            {"harassment": 0.8, "harassment/threatening": 0.7, "violence": 0.7},
            {"harassment": True, "harassment/threatening": True, "violence": True},
        ),
        (  # violence without a target is not harassment/threatening
            {"abusive": 0.1, "harassment": 0.3, "violence": 0.95},
            {"abusive": False, "harassment": False, "violence": True},
            {"harassment": 0.3, "harassment/threatening": 0.3, "violence": 0.95},
            {"harassment": False, "harassment/threatening": False, "violence": True},
        ),
    ],
)
def test_mapping(scores, flags, want_scores, want_flags):
    cat_scores, cats = map_scores(scores, flags)
    for cat in MODELED:
        assert cat_scores[cat] == pytest.approx(want_scores[cat]) and cats[cat] == want_flags[cat]
    assert all(cat_scores[c] == 0.0 and cats[c] is False for c in UNMODELED)


def test_moderation_response_validates_with_openai_types():
    result = TextResult(scores={"abusive": 0.1, "harassment": 0.6, "violence": 0.7},
                        flags={"abusive": False, "harassment": True, "violence": True},
                        actions={"abusive": "none", "harassment": "review", "violence": "remove"}, truncated=False)
    body = moderation_response([result, result], model="tweetguard:abc")
    parsed = ModerationCreateResponse.model_validate(body)
    assert parsed.id.startswith("modr-") and parsed.model == "tweetguard:abc" and len(parsed.results) == 2
    first = parsed.results[0]
    assert first.flagged and first.categories.harassment_threatening and not first.categories.hate
    applied = first.category_applied_input_types
    assert applied.violence == ["text"] and applied.hate == []
    assert first.model_extra["tweetguard"]["scores"] == result.scores
    assert first.model_extra["tweetguard"]["actions"] == result.actions


def test_classify_request_shapes():
    assert ClassifyRequest(text="a").items() == ["a"]
    assert ClassifyRequest(texts=["a", "b"]).items() == ["a", "b"]
    for bad in ({}, {"text": "a", "texts": ["b"]}, {"texts": [1]}, {"texts": ["a"], "thresholds": {"x": 0.5}},
                {"texts": ["a"], "thresholds": {"violence": float("nan")}}, {"texts": ["a"], "extra": 1},
                {"text": "a", "thresholds": {"violence": {"review": 0.9, "remove": 0.5}}},  # review above remove
                {"text": "a", "thresholds": {"violence": {"remove": 1.5}}},
                {"text": "a", "thresholds": {"violence": {"block": 0.5}}}):  # not a tier
        with pytest.raises(ValidationError):
            ClassifyRequest.model_validate(bad)


def test_threshold_overrides_split_into_flags_and_tiers():
    req = ClassifyRequest.model_validate({"text": "a", "thresholds": {
        "abusive": 0.3, "harassment": {"flag": 0.4, "review": None}, "violence": {"remove": 0.8}}})
    flags, tiers = split_overrides(req.thresholds)
    assert flags == {"abusive": 0.3, "harassment": 0.4}
    assert tiers == {"harassment": {"review": None}, "violence": {"remove": 0.8}}  # null = off; absent = card's
    assert split_overrides(None) == ({}, {})


def test_moderation_request_shapes():
    parts = [{"type": "text", "text": "b"}, "c"]
    assert ModerationRequest(input="a").items() == ["a"]
    assert ModerationRequest.model_validate({"input": parts}).items() == ["b", "c"]
    for bad in ({}, {"input": 3}, {"input": [3]}, {"input": [{"type": "image_url", "image_url": {"url": "u"}}]},
                {"input": [{"type": "text", "text": 3}]}):
        with pytest.raises(ValidationError):
            ModerationRequest.model_validate(bad)


def test_settings_from_env_name_the_variable():
    s = ServiceSettings.from_env({"TWEETGUARD_MAX_TEXTS": "5", "TWEETGUARD_LOG_TEXTS": "true", "OTHER": "x"})
    assert s.max_texts == 5 and s.log_texts and s.max_chars == ServiceSettings().max_chars
    assert ServiceSettings.from_env({"TWEETGUARD_TORCH_THREADS": ""}).torch_threads is None  # empty = unset
    with pytest.raises(ValueError, match="TWEETGUARD_BATCH_MAX_SIZE"):
        ServiceSettings.from_env({"TWEETGUARD_BATCH_MAX_SIZE": "0"})


def test_score_cache_is_a_bounded_lru():
    cache = ScoreCache(2)
    cache.put(("v1", "a"), 1)
    cache.put(("v1", "b"), 2)
    assert cache.get(("v1", "a")) == 1  # a is now the most recently used
    cache.put(("v1", "c"), 3)  # evicts b, the least recently used
    assert cache.get(("v1", "b")) is None and cache.get(("v1", "a")) == 1 and len(cache) == 2
    assert cache.get(("v2", "a")) is None  # another model version never shares an entry
    with pytest.raises(ValueError, match="0 means no cache"):
        ScoreCache(0)
    assert ServiceSettings.from_env({"TWEETGUARD_CACHE_SIZE": "0"}).cache_size == 0
