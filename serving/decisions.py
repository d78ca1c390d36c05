"""Decision ids: a signed, self-contained record of one served decision, verifiable without server state.

Every `/classify` result (and every `/v1/moderations` result's `tweetguard` extra) carries a `decision_id`:

    base64url(payload JSON) "." base64url(HMAC-SHA256(key, payload JSON))

The payload (`DECISION_VERSION` 1) holds the model version, the sha256 of the text as sent, the calibrated scores,
the flag thresholds and the tier thresholds the decision used, and when it was made (UTC seconds). Anyone holding
the key (the service's `TWEETGUARD_DECISION_KEY`) can check that the service made exactly that decision, so a
verdict sent back (`POST /feedback`, issue 35) cannot name a decision the service never made or alter its scores.
Without a configured key the service draws a random one at start-up and says so: its ids stop verifying at the
next restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping

DECISION_VERSION = 1


class DecisionError(ValueError):
    """A decision id that is malformed, forged, or not of this service's key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DecisionSigner:
    def __init__(self, key: str | bytes | None = None):
        """`key`: the shared secret (str or bytes); None draws a random one (ids verify only in this process)."""
        self.ephemeral = key is None or key == ""
        raw = secrets.token_bytes(32) if self.ephemeral else key
        self._key = raw.encode("utf-8") if isinstance(raw, str) else raw

    def issue(self, *, model: str, text: str, scores: Mapping[str, float], thresholds: Mapping[str, float],
              tiers: Mapping[str, Mapping[str, float | None]], at: float | None = None) -> str:
        payload = {"v": DECISION_VERSION, "model": model, "text_sha256": text_sha256(text),
                   "scores": dict(scores), "thresholds": dict(thresholds), "tiers": {p: dict(t) for p, t in tiers.items()},
                   "at": int(time.time() if at is None else at)}
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return f"{_b64(body)}.{_b64(hmac.new(self._key, body, hashlib.sha256).digest())}"

    def verify(self, decision_id: object) -> dict:
        """The decision's payload if `decision_id` is one this key signed; DecisionError naming why not."""
        if not isinstance(decision_id, str) or decision_id.count(".") != 1:
            raise DecisionError("decision_id: not a decision id (expected <payload>.<signature>)")
        body_b64, sig_b64 = decision_id.split(".")
        try:
            body, sig = _unb64(body_b64), _unb64(sig_b64)
        except (ValueError, TypeError):
            raise DecisionError("decision_id: not base64url") from None
        if not hmac.compare_digest(sig, hmac.new(self._key, body, hashlib.sha256).digest()):
            raise DecisionError("decision_id: the signature does not match (not a decision this service made)")
        payload = json.loads(body)
        if payload.get("v") != DECISION_VERSION:
            raise DecisionError(f"decision_id: version {payload.get('v')!r}, this service reads {DECISION_VERSION}")
        return payload
