"""POST /feedback on a real `bentoml serve` with a real SQLite store: verdicts on signed decisions, repeats,
revisions, texts, every bad input a 4xx that stores nothing, the route off without a token, nothing lost on
SIGTERM, and the verdicts counted on /metrics."""

from __future__ import annotations

import httpx
import pytest

from benchmarks.served import metric_samples
from serving.decisions import DecisionSigner
from serving.feedback import FeedbackStore, sqlite_url

pytestmark = pytest.mark.integration

TOKEN, KEY = "fb-token", "fb-key"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXTS = ["you are a stupid idiot", "i will find you and hurt you", "have a good day"]


@pytest.fixture(scope="module")
def served(serve_tiny, tmp_path_factory):
    data = tmp_path_factory.mktemp("service_data")
    server = serve_tiny({"TWEETGUARD_API_TOKEN": TOKEN, "TWEETGUARD_DECISION_KEY": KEY,
                         "TWEETGUARD_DATA_DIR": str(data), "TWEETGUARD_MAX_NOTE_CHARS": "50"})
    server.data = data
    return server


def _decisions(url: str) -> list[dict]:
    r = httpx.post(url + "/classify", json={"texts": TEXTS}, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _post(url: str, payload) -> httpx.Response:
    return httpx.post(url + "/feedback", json=payload, headers=AUTH)


def _rows(served) -> list[dict]:
    return FeedbackStore(sqlite_url(served.data)).rows()


def test_verdicts_are_stored_repeats_are_not_and_changes_are_revisions(served):
    results = _decisions(served.url)
    d0 = results[0]["decision_id"]
    first = _post(served.url, {"decision_id": d0, "labels": {"abusive": False}, "reviewer": "ann"})
    assert first.status_code == 201 and first.json() == {"id": first.json()["id"], "revision": 1, "stored": True,
                                                         "usable_for_training": False}
    again = _post(served.url, {"decision_id": d0, "labels": {"abusive": False}, "reviewer": "ann"})
    assert again.status_code == 200 and again.json()["stored"] is False and again.json()["id"] == first.json()["id"]
    appeal = _post(served.url, {"decision_id": d0, "labels": {"abusive": True, "violence": "unsure"},
                                "reviewer": "ann", "note": "appeal upheld", "text": TEXTS[0]})
    assert appeal.status_code == 201 and appeal.json()["revision"] == 2 and appeal.json()["usable_for_training"]
    missed = _post(served.url, {"decision_id": results[2]["decision_id"], "labels": {"violence": True},
                                "reviewer": "bob"})  # a policy the model did not flag, reported
    assert missed.status_code == 201
    rows = [r for r in _rows(served) if r["reviewer"] in ("ann", "bob")]
    assert [(r["reviewer"], r["revision"], r["text"]) for r in rows] == [("ann", 1, None), ("ann", 2, TEXTS[0]),
                                                                         ("bob", 1, None)]
    assert rows[0]["decision"]["scores"] == results[0]["scores"]
    counted = metric_samples(served.url, "tweetguard_feedback_verdicts_total")
    assert sum(counted.values()) == 4  # ann: abusive, then abusive + violence; bob: violence


def _forged(decision_id: str) -> str:
    other = DecisionSigner("not-the-key").issue(model="tweetguard:x", text="t", scores={}, thresholds={}, tiers={})
    return other


BAD = [  # (change to a good verdict, status, field named)
    ({"decision_id": "garbage"}, 400, "decision_id"),
    ({"decision_id": "FORGED"}, 400, "decision_id"),
    ({"labels": {"spam": True}}, 400, "labels"),
    ({"labels": {}}, 400, "labels"),
    ({"labels": {"abusive": "yes"}}, 400, "labels"),
    ({"labels": {"abusive": 1}}, 400, "labels"),
    ({"reviewer": ""}, 400, "reviewer"),
    ({"note": "x" * 51}, 400, "note"),
    ({"text": "not the text that was scored"}, 400, "text"),
    ({"extra": 1}, 400, "extra"),
]


@pytest.mark.parametrize("change, status, field", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_verdicts_are_4xx_naming_the_field_and_store_nothing(served, change, status, field):
    decision = _decisions(served.url)[1]["decision_id"]
    good = {"decision_id": decision, "labels": {"violence": True}, "reviewer": "carol"}
    payload = {**good, **change}
    if payload["decision_id"] == "FORGED":
        payload["decision_id"] = _forged(decision)
    before = len(_rows(served))
    r = _post(served.url, payload)
    assert r.status_code == status, r.text
    assert field in r.json()["error"]["message"]
    assert len(_rows(served)) == before


def test_feedback_needs_the_token(served):
    r = httpx.post(served.url + "/feedback", json={"decision_id": "x", "labels": {"abusive": True}, "reviewer": "r"})
    assert r.status_code == 401


def test_feedback_is_off_without_a_token(serve_tiny, tmp_path):
    open_server = serve_tiny({"TWEETGUARD_DATA_DIR": str(tmp_path)})
    decision = httpx.post(open_server.url + "/classify", json={"text": "hi"}).json()["results"][0]["decision_id"]
    r = httpx.post(open_server.url + "/feedback", json={"decision_id": decision, "labels": {"abusive": False},
                                                        "reviewer": "r"})
    assert r.status_code == 404 and "TWEETGUARD_API_TOKEN" in r.json()["error"]["message"]
    assert "POST /feedback is off" in open_server.log()
    assert not (tmp_path / "feedback.db").exists()


def test_nothing_acknowledged_is_lost_on_sigterm(serve_tiny, tmp_path):
    server = serve_tiny({"TWEETGUARD_API_TOKEN": TOKEN, "TWEETGUARD_DECISION_KEY": KEY,
                         "TWEETGUARD_DATA_DIR": str(tmp_path)})
    results = _decisions(server.url)
    for i, r in enumerate(results):
        assert _post(server.url, {"decision_id": r["decision_id"], "labels": {"abusive": i % 2 == 0},
                                  "reviewer": "dan", "text": TEXTS[i]}).status_code == 201
    server.stop()  # SIGTERM
    rows = FeedbackStore(sqlite_url(tmp_path)).rows()
    assert [r["text"] for r in rows] == TEXTS and all(r["usable_for_training"] for r in rows)
