"""The service served by a real `bentoml serve` (source tree, tiny model imported into a tmp model store),
called with httpx, bentoml.SyncHTTPClient and the official openai client."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import openai
import pytest
from openai.types import ModerationCreateResponse

from benchmarks.served import batch_sizes
from serving.decisions import DecisionSigner, text_sha256
from serving.moderation import map_scores
from serving.policies import POLICIES
from serving.predictor import Predictor

pytestmark = pytest.mark.integration

LIMITS = {"TWEETGUARD_MAX_TEXTS": "8", "TWEETGUARD_MAX_CHARS": "300", "TWEETGUARD_MAX_BODY_BYTES": "20000",
          "TWEETGUARD_EXPLAIN_MAX_WORDS": "48", "TWEETGUARD_EXPLAIN_TOP_K": "3", "TWEETGUARD_DECISION_KEY": "test-key"}
TEXTS = ["you are a stupid idiot", "have a good day", "i will find you and hurt you", "@user go home", "love"]
ODD = [
    "i will 🔪 you 😡",  # emoji
    "أنت غبي \u202eyou are stupid\u202c",  # RTL script + bidi override
    "shut\u200b up\u200d idiot\ufeff",  # zero-width characters
    "nul\x00byte\x07bell",  # NUL and control characters
    "\u200b\u200b",  # nothing visible: normalizes to an empty text, still scored
    "𝓼𝓽𝓾𝓹𝓲𝓭 " * 10,  # mathematical letters, NFKC -> plain
]
MARKER = "zqxjv unique marker text"


@pytest.fixture(scope="module")
def served(serve_tiny):
    return serve_tiny(LIMITS)


@pytest.fixture(scope="module")
def offline(tiny_artifact: Path) -> Predictor:
    return Predictor.load(tiny_artifact)


def _assert_same_scores(served_results: list[dict], expected: list[dict]) -> None:
    assert len(served_results) == len(expected)
    for got, want in zip(served_results, expected):
        assert got["scores"].keys() == want["scores"].keys()
        for p, v in want["scores"].items():
            assert abs(got["scores"][p] - v) <= 1e-5, (p, got["scores"][p], v)
        assert got["truncated"] == want["truncated"]


def test_classify_equals_offline_predictor(served, offline):
    long_text = "you are a stupid idiot " * 10  # 50 tokens > 32, the tiny model's window
    texts = [*TEXTS, long_text]
    r = httpx.post(served.url + "/classify", json={"texts": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = offline.predict(texts)
    _assert_same_scores(body["results"], expected)
    assert [x["flags"] for x in body["results"]] == [x["flags"] for x in expected]
    assert [x["actions"] for x in body["results"]] == [x["actions"] for x in expected]
    assert body["results"][-1]["truncated"] and not body["results"][0]["truncated"]
    card = offline.card
    assert body["model"]["name"] == card.model_name and body["model"]["thresholds"] == card.thresholds
    assert body["model"]["thresholds_source"] == "policy_card" and body["model"]["max_length"] == card.max_length
    assert body["model"]["tiers"] == card.tier_thresholds
    for text, result in zip(texts, body["results"]):  # each decision signed with the service's key
        decided = DecisionSigner("test-key").verify(result["decision_id"])
        assert decided["text_sha256"] == text_sha256(text) and decided["scores"] == result["scores"]
        assert decided["thresholds"] == card.thresholds and decided["tiers"] == card.tier_thresholds
        assert decided["model"] == f"{card.model_name}:{body['model']['version']}"


def test_explain_adds_reasons_that_explain_the_returned_score(served, offline):
    """With explain, each result carries per policy the top words (offsets into the text as sent) and their
    contributions, as serving.reasons computes offline; the scores are the plain request's; words past the
    window are listed, not attributed; without explain there are none."""
    from serving.reasons import explain

    long_text = "you are a stupid idiot " * 7  # 35 words, past the tiny model's 32-token window
    texts = ["you are a stupid idiot", "i will 🔪 you 😡", long_text]
    r = httpx.post(served.url + "/classify", json={"texts": texts, "explain": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    _assert_same_scores(results, offline.predict(texts))
    for text, got, want in zip(texts, results, explain(offline, texts, top_k=3)):
        for policy in POLICIES:
            assert [(x["word"], x["start"], x["end"]) for x in got["reasons"][policy]] == \
                [(x["word"], x["start"], x["end"]) for x in want.policies[policy]]
            for x, y in zip(got["reasons"][policy], want.policies[policy]):
                assert text[x["start"]:x["end"]] == x["word"] and abs(x["contribution"] - y["contribution"]) < 1e-4
        assert got["words_outside_window"] == want.outside_window
    assert len(results[1]["reasons"]["violence"]) == 3 and results[2]["words_outside_window"]
    card = offline.card
    for got in results:  # a statement of reasons for each policy flagged or acted on, and only those
        acted = [p for p in POLICIES if got["flags"][p] or got["actions"][p] != "none"]
        assert [s["policy"] for s in got["statements"]] == acted
        for s in got["statements"]:
            p = s["policy"]
            assert s["schema_version"] == 1 and s["automated"] is True and s["decision_id"] == got["decision_id"]
            assert s["score"] == got["scores"][p] and s["action"] == got["actions"][p]
            assert s["flag_threshold"] == card.thresholds[p] and s["tier_thresholds"] == card.tier_thresholds[p]
            assert s["top_words"] == got["reasons"][p] and s["policy_definition"] == card.policy(p).description
            assert s["model"]["policy_card_schema"] == card.schema_version and s["model"]["version"]
    assert any(r["statements"] for r in results)
    plain = httpx.post(served.url + "/classify", json={"texts": texts}).json()["results"]
    assert all(x["reasons"] == {} and x["words_outside_window"] == [] and x["statements"] == [] for x in plain)


def test_tier_overrides_per_request(served, offline):
    override = {"violence": {"review": 0.0, "remove": None}, "abusive": {"flag": 0.0, "remove": 0.99}}
    r = httpx.post(served.url + "/classify", json={"texts": TEXTS, "thresholds": override})
    assert r.status_code == 200, r.text
    body = r.json()
    tiers = {"violence": {"review": 0.0, "remove": None}, "abusive": {"remove": 0.99}}
    expected = offline.predict(TEXTS, thresholds={"abusive": 0.0}, tiers=tiers)
    assert [x["actions"] for x in body["results"]] == [x["actions"] for x in expected]
    assert all(x["actions"]["violence"] == "review" and x["flags"]["abusive"] for x in body["results"])
    assert body["model"]["tiers"]["violence"] == {"review": 0.0, "remove": None}
    assert body["model"]["tiers"]["abusive"] == {**offline.card.tier_thresholds["abusive"], "remove": 0.99}
    assert body["model"]["thresholds"]["abusive"] == 0.0 and body["model"]["thresholds_source"] == "request"


def test_v1_card_serves_as_before(serve_tiny, v1_artifact, offline):
    """A version registered before tiers (card schema 1) serves its flags unchanged, every action "none"."""
    v1 = serve_tiny(LIMITS, model_dir=v1_artifact)
    body = httpx.post(v1.url + "/classify", json={"texts": TEXTS}).json()
    _assert_same_scores(body["results"], offline.predict(TEXTS))
    assert [x["flags"] for x in body["results"]] == [x["flags"] for x in offline.predict(TEXTS)]
    assert all(set(x["actions"].values()) == {"none"} for x in body["results"])
    assert body["model"]["tiers"] == {p: {"review": None, "remove": None} for p in POLICIES}
    mod = httpx.post(v1.url + "/v1/moderations", json={"input": TEXTS[0]}).json()
    assert set(mod["results"][0]["tweetguard"]["actions"].values()) == {"none"}


def test_single_text_and_threshold_override_echoed(served, offline):
    r = httpx.post(served.url + "/classify", json={"text": TEXTS[0], "thresholds": {"violence": 0.0}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 1
    assert body["model"]["thresholds"] == {**offline.card.thresholds, "violence": 0.0}
    assert body["model"]["thresholds_source"] == "request"
    assert body["results"][0]["flags"]["violence"] is True  # every probability is >= 0
    _assert_same_scores(body["results"], offline.predict([TEXTS[0]]))


def test_odd_unicode_is_scored_like_offline(served, offline):
    r = httpx.post(served.url + "/classify", json={"texts": ODD})
    assert r.status_code == 200, r.text
    _assert_same_scores(r.json()["results"], offline.predict(ODD))


def test_moderations_with_openai_client(served, offline):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    resp = client.moderations.create(input=TEXTS[:3])
    assert isinstance(resp, ModerationCreateResponse) and len(resp.results) == 3
    for result, want in zip(resp.results, offline.predict(TEXTS[:3])):
        wire = result.model_dump(by_alias=True)
        scores, flags = map_scores(want["scores"], want["flags"])
        for cat, v in scores.items():
            assert abs(wire["category_scores"][cat] - v) <= 1e-5, cat
        assert wire["categories"] == flags
        assert result.flagged == any(want["flags"].values())
        ours = result.model_extra["tweetguard"]  # our own three scores ride along
        assert set(ours["unmodeled"]) >= {"hate", "sexual", "self-harm", "illicit"}
        assert DecisionSigner("test-key").verify(ours["decision_id"])["scores"] == ours["scores"]
        assert ours["flags"] == want["flags"] and ours["actions"] == want["actions"]
    single = client.moderations.create(input=TEXTS[0], model="omni-moderation-latest")
    assert len(single.results) == 1 and single.model.startswith("tweetguard:")
    with pytest.raises(openai.BadRequestError, match="input"):
        client.moderations.create(input=[])
    assert "reasons" not in ours  # plain OpenAI behaviour unless the extension asks
    explained = client.moderations.create(input=TEXTS[:2], extra_body={"tweetguard": {"explain": True}})
    classify = httpx.post(served.url + "/classify", json={"texts": TEXTS[:2], "explain": True}).json()["results"]
    for result, want in zip(explained.results, classify):
        ours = result.model_extra["tweetguard"]
        assert ours["reasons"] == want["reasons"]
        drop = lambda st: [{k: v for k, v in x.items() if k != "decision_id"} for x in st]  # noqa: E731 (time)
        assert drop(ours["statements"]) == drop(want["statements"])
    with pytest.raises(openai.BadRequestError, match="tweetguard"):
        client.moderations.create(input="a", extra_body={"tweetguard": {"explain": "yes"}})


def test_moderations_raw_response_validates(served):
    parts = [{"type": "text", "text": TEXTS[0]}, TEXTS[1]]
    for payload in ({"input": TEXTS[2]}, {"input": TEXTS}, {"input": parts}, {"input": ODD}):
        r = httpx.post(served.url + "/v1/moderations", json=payload)
        assert r.status_code == 200, r.text
        ModerationCreateResponse.model_validate(r.json())


def test_bentoml_sync_client(served, offline):
    with bentoml.SyncHTTPClient(served.url) as client:
        body = client.classify(texts=TEXTS)
        mod = client.moderations(input=TEXTS[:2])
    _assert_same_scores(body["results"], offline.predict(TEXTS))
    ModerationCreateResponse.model_validate(mod)


def _post(url: str, path: str, payload=None, *, content: bytes | None = None, headers=None) -> httpx.Response:
    if payload is not None:
        content = json.dumps(payload).encode()
    headers = {"content-type": "application/json", **(headers or {})}
    return httpx.post(url + path, content=content, headers=headers)


BAD = [  # (path, json payload or raw bytes, expected status, the field the reason must name)
    ("/classify", b'{"texts": ["a"', 400, "body"),
    ("/classify", b'\xff\xfe{"texts": []}', 400, "body"),
    ("/classify", [["a"]], 400, "body"),
    ("/classify", {}, 400, "text"),
    ("/classify", {"text": "a", "texts": ["b"]}, 400, "text"),
    ("/classify", {"texts": "one string"}, 400, "texts"),
    ("/classify", {"texts": []}, 400, "texts"),
    ("/classify", {"texts": ["ok", 3]}, 400, "texts[1]"),
    ("/classify", {"texts": ["ok", None]}, 400, "texts[1]"),
    ("/classify", {"texts": ["ok", "  "]}, 400, "texts[1]"),
    ("/classify", {"text": ""}, 400, "text"),
    ("/classify", {"texts": ["a"] * 9}, 400, "texts"),
    ("/classify", {"texts": ["ok", "x" * 301]}, 400, "texts[1]"),
    ("/classify", b'{"texts": ["ok", "lone \\ud800 surrogate"]}', 400, "texts[1]"),
    ("/classify", {"texts": ["a"], "lang": "en"}, 400, "lang"),
    ("/classify", {"texts": ["a"], "thresholds": {"violence": 1.5}}, 400, "thresholds"),
    ("/classify", {"texts": ["a"], "thresholds": {"spam": 0.5}}, 400, "thresholds"),
    ("/classify", b'{"texts": ["a"], "thresholds": {"violence": NaN}}', 400, "thresholds"),
    ("/classify", {"texts": ["a"], "thresholds": {"violence": {"review": 0.9, "remove": 0.5}}}, 400, "thresholds"),
    ("/classify", {"texts": ["a"], "thresholds": {"violence": {"block": 0.5}}}, 400, "thresholds"),
    ("/classify", {"texts": ["a"], "thresholds": {"violence": True}}, 400, "thresholds"),  # not taken as 1.0
    ("/classify", {"texts": ["a"], "thresholds": {"violence": {"flag": "0.3"}}}, 400, "thresholds"),  # a string
    ("/classify", b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "body"),  # nesting past the parser
    ("/classify", b'{"text": "a", "thresholds": {"violence": ' + b"1" * 10_000 + b"}}", 400, "body"),  # int limit
    ("/classify", {"texts": ["a"], "explain": "yes"}, 400, "explain"),
    ("/classify", {"texts": ["a"], "explain": 1}, 400, "explain"),
    ("/classify", {"texts": ["a"], "explain": True, "explain_method": "shap"}, 400, "explain_method"),
    ("/classify", {"texts": ["a"], "explain": True, "explain_method": "integrated_gradients"}, 400, "explain_method"),
    ("/classify", {"texts": ["one two three four five six seven eight nine ten"] * 5, "explain": True}, 400,
     "explain"),  # 50 words, the limit is 48
    ("/v1/moderations", b'{"input": ' + b'{"a":' * 2500 + b"1" + b"}" * 2500 + b"}", 400, "body"),
    ("/v1/moderations", b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "body"),
    ("/v1/moderations", {}, 400, "input"),
    ("/v1/moderations", {"input": []}, 400, "input"),
    ("/v1/moderations", {"input": 7}, 400, "input"),
    ("/v1/moderations", {"input": ["ok", 7]}, 400, "input[1]"),
    ("/v1/moderations", {"input": [{"type": "image_url", "image_url": {"url": "http://x/y"}}]}, 400, "input[0]"),
    ("/v1/moderations", {"input": "a", "user": "u1"}, 400, "user"),
    ("/v1/moderations", {"input": "a", "tweetguard": {"explain": 1}}, 400, "tweetguard"),
    ("/v1/moderations", {"input": "a", "tweetguard": {"why": True}}, 400, "tweetguard"),
    ("/v1/moderations", {"input": ["one two three four five six seven eight nine ten"] * 5,
                         "tweetguard": {"explain": True}}, 400, "explain"),
]


@pytest.mark.parametrize("path, payload, status, field", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_4xx_naming_the_field(served, path, payload, status, field):
    t0 = time.monotonic()
    r = _post(served.url, path, None if isinstance(payload, bytes) else payload,
              content=payload if isinstance(payload, bytes) else None)
    assert time.monotonic() - t0 < 1.0, "a refusal must come at once"
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert field in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_wrong_content_type_method_size_and_internal_route(served):
    r = httpx.post(served.url + "/classify", content=b'{"texts": ["a"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "Content-Type" in r.json()["error"]["message"]
    r = httpx.post(served.url + "/classify", content=b'{"texts": ["a"]}')  # no content type at all
    assert r.status_code == 415
    r = httpx.get(served.url + "/classify")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    big = json.dumps({"texts": ["a" * 250] * 100}).encode()  # > 20,000 bytes, declared in Content-Length
    r = _post(served.url, "/classify", content=big)
    assert r.status_code == 413 and "body" in r.json()["error"]["message"]

    def chunks():  # chunked transfer: no Content-Length, the limit must hold while streaming
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    r = httpx.post(served.url + "/classify", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # No route beyond the documented ones scores anything.
    r = _post(served.url, "/internal/score_batch", {"texts": ["a"]})
    assert r.status_code == 404


def test_concurrent_requests_are_batched(served, offline):
    before = batch_sizes(served.url)
    texts = [f"{TEXTS[i % len(TEXTS)]} {'!' * (i % 7)} n{i}" for i in range(224)]  # distinct: no cache hits
    with httpx.Client(base_url=served.url) as client, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda t: client.post("/classify", json={"text": t}), texts))
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    got = [r.json()["results"][0] for r in responses]
    _assert_same_scores(got, offline.predict(texts))
    after = batch_sizes(served.url)
    calls, merged = after[1] - before[1], after[0] - before[0]  # model calls, requests they carried
    assert merged == len(texts)
    assert calls < merged, f"no request was batched with another: {calls} model calls for {merged} requests"


def test_health_readiness_and_logs(served):
    # What /readyz answers while the model loads, polled from process start (`wait_ready`). BentoML builds the
    # service (TweetGuard.__init__: model load and warm-up) in the worker's ASGI startup, after the port is
    # bound: a /readyz sent meanwhile is accepted and held, unanswered ("no answer"), and its first HTTP answer
    # is the 200 once the model is loaded. "refused" polls (nothing listening yet) show nothing about readiness.
    waiting = [p for p in served.polls if p != "refused"]
    assert waiting, f"no /readyz request reached the server before it was ready: {served.polls}"
    assert all(p == "no answer" or p.startswith("http 5") for p in waiting), served.polls
    # ... and the first 200 came after the model was loaded and warm (the service logs that line last).
    assert "serving tiny:" in served.log_at_ready, f"/readyz was 200 before the model was loaded:\n{served.polls}"
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(served.url + path).status_code == 200
    r = httpx.post(served.url + "/classify", json={"texts": [MARKER]})
    assert r.status_code == 200
    log = served.log()
    assert "TWEETGUARD_API_TOKEN is not set" in log  # the open-service warning
    assert "method=POST,path=/classify" in log  # BentoML's access log line: requests are logged ...
    assert MARKER not in log  # ... without their texts


def _metrics(url: str) -> dict[str, float]:
    """Our metric samples from /metrics: {'name{labels}': value} (tweetguard_* only)."""
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("tweetguard_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_count_what_was_scored_and_refused(served, offline):
    before = _metrics(served.url)
    texts = [*TEXTS, "zqx a text only this test sends", "you are a stupid idiot " * 10]  # the last one truncated
    assert httpx.post(served.url + "/classify", json={"texts": texts}).status_code == 200
    assert httpx.post(served.url + "/v1/moderations", json={"input": TEXTS[0]}).status_code == 200
    assert _post(served.url, "/classify", {"texts": []}).status_code == 400
    after = _metrics(served.url)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    want = offline.predict(texts)
    assert delta('tweetguard_texts_scored_total{endpoint="classify"}') == len(texts)
    assert delta('tweetguard_texts_scored_total{endpoint="moderations"}') == 1
    assert delta('tweetguard_truncated_texts_total{endpoint="classify"}') == 1
    first = offline.predict(TEXTS[:1])[0]
    for p in POLICIES:
        assert delta(f'tweetguard_flags_total{{policy="{p}"}}') == sum(r["flags"][p] for r in want) + first["flags"][p]
        assert delta(f'tweetguard_score_count{{policy="{p}"}}') == len(texts) + 1
        for action in ("review", "remove"):
            n = sum(r["actions"][p] == action for r in [*want, first])
            assert delta(f'tweetguard_actions_total{{action="{action}",policy="{p}"}}') == n
    assert delta('tweetguard_refusals_total{code="empty",status="400"}') == 1
    misses = delta('tweetguard_cache_lookups_total{result="miss"}')  # texts the exact-repeat cache passed on
    calls = delta("tweetguard_model_call_seconds_count")  # one per merged batch, each timed
    assert misses >= 1 and 1 <= calls == delta("tweetguard_batch_texts_count") <= 2
    assert delta("tweetguard_batch_texts_sum") == misses and delta("tweetguard_model_call_seconds_sum") > 0
    info = [k for k, v in after.items() if k.startswith("tweetguard_model_info{") and v == 1]
    assert len(info) == 1 and 'model_name="tiny"' in info[0] and 'card_schema="2"' in info[0]


def test_exact_repeats_are_served_from_the_cache(served, offline):
    before = _metrics(served.url)
    text = "@alice you are a stupid idiot zqxcache"
    same_after_normalization = "@bob you are a stupid idiot zqxcache"  # handles normalize to @user
    first = httpx.post(served.url + "/classify", json={"text": text}).json()
    again = httpx.post(served.url + "/classify", json={"texts": [same_after_normalization, text],
                                                      "thresholds": {"abusive": 0.0}}).json()
    after = _metrics(served.url)
    hits = after.get('tweetguard_cache_lookups_total{result="hit"}', 0) - before.get(
        'tweetguard_cache_lookups_total{result="hit"}', 0)
    misses = after.get('tweetguard_cache_lookups_total{result="miss"}', 0) - before.get(
        'tweetguard_cache_lookups_total{result="miss"}', 0)
    assert (hits, misses) == (2, 1), [k for k in after if "cache" in k]
    _assert_same_scores(again["results"], offline.predict([same_after_normalization, text]))
    assert again["results"][1]["scores"] == first["results"][0]["scores"]
    assert all(r["flags"]["abusive"] for r in again["results"])  # per-request thresholds apply to cached scores
