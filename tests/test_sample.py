"""`tweetguard sample` (training.release.sample): the strategies, determinism, repeats and labelled texts left out,
stratified weights, and the command on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.decisions import DecisionSigner
from serving.feedback import FeedbackStore, sqlite_url
from serving.policies import POLICIES
from training.data.sampling import labelled_keys, sample

THRESHOLDS = {p: 0.5 for p in POLICIES}


def _pool(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    texts = [f"w{i}a w{i}b w{i}c" for i in range(n)]  # no word shared: no near repeats
    return texts, rng.random((n, len(POLICIES)))


def test_uncertainty_takes_the_closest_to_a_threshold_and_random_is_seeded():
    texts, probs = _pool()
    out = sample(texts, probs, THRESHOLDS, n=10, strategy="uncertainty")
    dist = np.abs(probs - 0.5).min(axis=1)
    assert [c["index"] for c in out.rows] == list(np.argsort(dist)[:10])
    a, b = (sample(texts, probs, THRESHOLDS, n=10, strategy="random", seed=s) for s in (1, 1))
    assert [c["index"] for c in a.rows] == [c["index"] for c in b.rows]
    assert [c["index"] for c in sample(texts, probs, THRESHOLDS, n=10, strategy="random", seed=2).rows] != \
        [c["index"] for c in a.rows]
    assert all(c["weight"] == 20.0 for c in a.rows)  # 200 candidates / 10 drawn


def test_disagreement_needs_a_second_model_and_takes_the_largest_gaps():
    texts, probs = _pool()
    other = probs.copy()
    other[[5, 17, 99], 1] += 0.9
    out = sample(texts, probs, THRESHOLDS, n=3, strategy="disagreement", other=other)
    assert sorted(c["index"] for c in out.rows) == [5, 17, 99]
    with pytest.raises(ValueError, match="--challenger"):
        sample(texts, probs, THRESHOLDS, n=3, strategy="disagreement")
    with pytest.raises(ValueError, match="strategies are"):
        sample(texts, probs, THRESHOLDS, n=3, strategy="loudest")


def test_stratified_weights_are_stratum_sizes_over_draws():
    texts, probs = _pool(300)
    out = sample(texts, probs, THRESHOLDS, n=30, strategy="stratified", seed=3)
    assert len(out.rows) == 30 and len({c["index"] for c in out.rows}) == 30
    by_stratum: dict[str, list] = {}
    for c in out.rows:
        by_stratum.setdefault(c["stratum"], []).append(c)
    assert len(by_stratum) == 15  # 3 policies x 5 bands, 2 draws each
    # Weighted, the sample estimates the pool: every policy's weights sum to about the candidates left.
    for p in POLICIES:
        total = sum(c["weight"] for c in out.rows if c["stratum"].startswith(p + ":"))
        assert 200 <= total <= 300


def test_repeats_and_labelled_texts_are_never_sampled(tmp_path):
    texts = ["@USER you are an idiot", "@bob you are an idiot!!", "you are an idiot today", "what a lovely day",
             "a lovely day indeed", "i will hurt you", "have fun"]
    probs = np.full((len(texts), len(POLICIES)), 0.5)
    store, signer = FeedbackStore(sqlite_url(tmp_path)), DecisionSigner("k")
    token = signer.issue(model="m", text="I WILL HURT YOU", scores={}, thresholds={}, tiers={})
    store.record(decision_id=token, decision=signer.verify(token), reviewer="r", labels={"violence": True},
                 note=None, text="I WILL HURT YOU")
    out = sample(texts, probs, THRESHOLDS, n=10, strategy="random", labelled=labelled_keys(sqlite_url(tmp_path)))
    chosen = sorted(texts[c["index"]] for c in out.rows)
    assert chosen == ["@USER you are an idiot", "have fun", "what a lovely day"]
    assert out.excluded_labelled == 1 and out.excluded_repeats == 3


def test_sample_command_on_the_tiny_model(tiny_artifact, tmp_path, capsys):
    from training.cli import main

    src = tmp_path / "log.jsonl"  # a score log written with TWEETGUARD_LOG_TEXTS carries `text`
    words = ["you", "are", "stupid", "love", "kill", "day", "great", "idiot", "hurt", "home"]
    src.write_text("".join(json.dumps({"time": i, "text": f"{words[i % 10]} {words[(i * 3) % 10]} {i}"}) + "\n"
                           for i in range(40)), encoding="utf-8")
    out = tmp_path / "sample.csv"
    assert main(["sample", "--model", str(tiny_artifact), "--input", str(src), "--n", "5", "--strategy",
                 "uncertainty", "--output", str(out)]) == 0
    import csv

    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["sample_rank"] for r in rows] == ["1", "2", "3", "4", "5"] and rows[0]["sample_strategy"] == "uncertainty"
    assert all(f"{p}_probability" in rows[0] for p in POLICIES)
    err = capsys.readouterr().err  # 40 lines, 24 of them near repeats of an earlier one (shared words)
    assert "sampled 5 of 16 candidate texts" in err and "left out 24 exact or near repeats" in err
    assert main(["sample", "--model", str(tiny_artifact), "--input", str(src), "--n", "5", "--strategy",
                 "disagreement", "--output", str(out), "--challenger", str(tiny_artifact)]) == 0
