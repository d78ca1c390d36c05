"""Decision ids (serving.decisions): signed, self-contained, verifiable without server state; forgeries refused."""

from __future__ import annotations

import base64
import json

import pytest

from serving.decisions import DecisionError, DecisionSigner, text_sha256

DECISION = {"model": "tweetguard:abc", "text": "i will find you 🔪", "scores": {"abusive": 0.12, "violence": 0.91},
            "thresholds": {"abusive": 0.45, "violence": 0.3}, "tiers": {"violence": {"review": 0.38, "remove": None}}}


def test_a_decision_verifies_with_its_key_and_carries_what_was_decided():
    signer = DecisionSigner("k1")
    token = signer.issue(**DECISION, at=1_700_000_000)
    payload = DecisionSigner("k1").verify(token)  # another process with the same key: no shared state
    assert payload == {"v": 1, "model": "tweetguard:abc", "text_sha256": text_sha256(DECISION["text"]),
                       "scores": DECISION["scores"], "thresholds": DECISION["thresholds"],
                       "tiers": DECISION["tiers"], "at": 1_700_000_000}


@pytest.mark.parametrize("mangle, match", [
    (lambda t: t + "x", "signature|base64"),
    (lambda t: "nodot", "not a decision id"),
    (lambda t: t.replace(".", "..", 1), "not a decision id"),
    (lambda t: 42, "not a decision id"),
])
def test_malformed_or_altered_ids_are_refused(mangle, match):
    token = DecisionSigner("k1").issue(**DECISION)
    with pytest.raises(DecisionError, match=match):
        DecisionSigner("k1").verify(mangle(token))


def test_changed_scores_or_another_key_do_not_verify():
    token = DecisionSigner("k1").issue(**DECISION)
    body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["scores"]["violence"] = 0.01  # a verdict that rewrites what the model said
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode() + "." + sig
    with pytest.raises(DecisionError, match="signature"):
        DecisionSigner("k1").verify(forged)
    with pytest.raises(DecisionError, match="signature"):
        DecisionSigner("k2").verify(token)
    ephemeral = DecisionSigner()
    assert ephemeral.ephemeral and ephemeral.verify(ephemeral.issue(**DECISION))["model"] == "tweetguard:abc"
    with pytest.raises(DecisionError):
        DecisionSigner().verify(ephemeral.issue(**DECISION))  # a restart draws a new key
