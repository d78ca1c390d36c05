"""The soak script's correctness check, short (benchmarks.soak runs the 10-minute version): a fixed-rate stream
of distinct texts against a real `bentoml serve` of the tiny model; every answer equals its own text's offline
scores, nothing is lost, no 5xx, and the server's memory is sampled."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak
from serving.predictor import Predictor

pytestmark = pytest.mark.integration


def test_short_soak_every_answer_is_its_own_texts_scores(serve_tiny, tiny_artifact):
    served = serve_tiny({"TWEETGUARD_CACHE_SIZE": "0", "TWEETGUARD_MAX_INFLIGHT": "256"})
    words = ["you", "are", "a", "stupid", "idiot", "have", "good", "day", "i", "will", "find", "hurt", "love", "🔪"]
    texts = [" ".join(words[(k * 7 + j * 3) % len(words)] for j in range(3 + k % 40)) + f" #{k}"
             for k in range(1200)]  # lengths 3..42 words: batch-mates of different lengths
    offline = Predictor.load(tiny_artifact).predict(texts)
    expected = {t: row["scores"] for t, row in zip(texts, offline)}
    report = soak(served.url, served.proc.pid, texts, expected, rate=60, seconds=15, rss_every_s=1)
    assert report["requests"] >= 300  # up to 60/s for 15 s (fewer when the machine is busy: correctness only)
    assert report["ok"] == report["requests"], report
    assert report["mismatches"] == report["server_errors_5xx"] == report["transport_errors"] == 0
    assert len(report["rss_mb"]) >= 10 and report["rss_growth_after_warmup"] is not None
