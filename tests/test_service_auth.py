"""Bearer-token auth and overload answers of a real `bentoml serve` (TWEETGUARD_API_TOKEN set)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import bentoml
import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(serve_tiny):
    # Two scoring requests in flight and a 1 ms batch queue limit, so both overload answers (the guard's and
    # the batch queue's) are reachable with a few clients; texts logged on request (the default, off, is
    # checked in test_service_http); BentoML's access log off (on by default, also checked there).
    return serve_tiny({"TWEETGUARD_API_TOKEN": TOKEN, "TWEETGUARD_MAX_INFLIGHT": "2",
                       "TWEETGUARD_BATCH_MAX_LATENCY_MS": "1", "TWEETGUARD_LOG_TEXTS": "1",
                       "TWEETGUARD_ACCESS_LOG": "false"})


@pytest.mark.parametrize("path, payload", [("/classify", {"texts": ["hi"]}), ("/v1/moderations", {"input": "hi"})])
def test_scoring_needs_the_token(served, path, payload):
    r = httpx.post(served.url + path, json=payload)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["error"]["param"] == "Authorization"
    r = httpx.post(served.url + path, json=payload, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert r.status_code == 401
    r = httpx.post(served.url + path, json=payload, headers={"Authorization": "Bearer wrong-token"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = httpx.post(served.url + path, json=payload, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert r.status_code == 403
    r = httpx.post(served.url + path, json=payload, headers=AUTH)
    assert r.status_code == 200, r.text


def test_auth_is_checked_before_the_body(served):
    # An unauthenticated caller learns nothing about input validation.
    r = httpx.post(served.url + "/classify", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 401


def test_health_stays_open_and_no_open_warning(served):
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(served.url + path).status_code == 200
    assert "TWEETGUARD_API_TOKEN is not set" not in served.log()


def test_texts_logged_only_when_enabled(served):
    marker = "qzv opt-in logged marker"
    assert httpx.post(served.url + "/classify", json={"text": marker}, headers=AUTH).status_code == 200
    assert marker in served.log()
    assert "refused POST /classify: 401 unauthorized" in served.log()  # refusals are logged, without texts
    assert "path=/classify" not in served.log()  # TWEETGUARD_ACCESS_LOG=false: no access log lines


def test_clients_with_token(served):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=TOKEN, max_retries=0)
    assert len(client.moderations.create(input=["hi", "you idiot"]).results) == 2
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="nope", max_retries=0).moderations.create(input="hi")
    with bentoml.SyncHTTPClient(served.url, token=TOKEN) as c:
        assert len(c.classify(texts=["hi"])["results"]) == 1


def test_overload_is_503_with_reason_not_a_hang(served):
    def payload(k: int) -> dict:  # distinct texts: the exact-repeat cache must not absorb the load
        return {"texts": [f"you are a stupid idiot and i will find you {k} {j} " * 6 for j in range(64)]}

    def refused(responses) -> list[str]:
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and 503 in codes, codes
        out = [r for r in responses if r.status_code == 503]
        assert all(r.json()["error"]["code"] == "overloaded" and r.headers["Retry-After"] == "1" for r in out)
        return [r.json()["error"]["message"] for r in out]

    # The batch queue's limit: work queued ahead of a request past TWEETGUARD_BATCH_MAX_LATENCY_MS (1 ms here).
    # Eight senders against an in-flight limit of 2: a request is refused by either limit, depending on timing,
    # so rounds go on (at most 5) until the batch queue has refused one.
    messages: list[str] = []
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=30) as client, ThreadPoolExecutor(8) as pool:
        for round_ in range(5):
            messages += refused(list(pool.map(lambda k: client.post("/classify", json=payload(k)),
                                              range(16 * round_, 16 * round_ + 16))))
            if any("batch queue" in m for m in messages):
                break
    assert any("batch queue" in m for m in messages), messages
    assert all("batch queue" in m or "requests in flight" in m for m in messages), messages

    # The guard's in-flight limit (2 here): two requests whose bodies arrive slowly hold both slots.
    body = json.dumps({"text": "hi"}).encode()

    def slow_body():
        yield body[:4]
        time.sleep(1.5)
        yield body[4:]

    def send(k: int):
        content = slow_body() if k < 2 else body
        if k >= 2:
            time.sleep(0.5)  # after both slow ones are in
        return httpx.post(served.url + "/classify", content=content,
                          headers={**AUTH, "content-type": "application/json"}, timeout=30)

    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(send, range(3)))
    assert [r.status_code for r in responses] == [200, 200, 503]
    assert "2 requests in flight, the limit is 2" in refused(responses)[0]
    # Overload passes: a request on its own is served again.
    assert httpx.post(served.url + "/classify", json={"text": "hi"}, headers=AUTH).status_code == 200


def test_tokens_never_appear_in_logs_or_error_bodies(served):
    """Neither the configured token nor a wrong one a client sent is echoed in a response or written to the log
    (the 401/403 bodies name the header, not its value)."""
    wrong = "wr0ng-t0ken-zqx"
    bodies = [httpx.post(served.url + "/classify", json={"text": "hi"}, headers={"Authorization": f"Bearer {wrong}"}),
              httpx.post(served.url + "/classify", json={"texts": []}, headers=AUTH),
              httpx.post(served.url + "/v1/moderations", json={"input": 3}, headers=AUTH)]
    assert [r.status_code for r in bodies] == [403, 400, 400]
    for r in bodies:
        assert TOKEN not in r.text and wrong not in r.text and TOKEN not in str(r.headers)
    log = served.log()
    assert TOKEN not in log and wrong not in log
