"""Decision tiers (policy card v2): choosing review / remove thresholds for a precision target, the action
rule, v1 cards, overrides, and what evaluation reports."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from serving.artifact import CARD_FILE, ArtifactError, Tier, action_of, read_card, write_card
from serving.policies import POLICIES
from serving.predictor import Predictor
from training.evaluation.evaluate import queue_report, tier_report
from training.metrics import choose_tier
from training.evaluation.render import tier_table
from training.scorer import Scored


def _fixture_scores():
    # 10 rows scored 0.95 .. 0.05; positives at the top except one negative at 0.85 and a positive at 0.15.
    probs = np.round(np.linspace(0.95, 0.05, 10), 2)
    labels = np.array([1, 0, 1, 1, 1, 0, 0, 0, 1, 0])
    return labels, probs


def test_tier_is_the_lowest_threshold_reaching_the_target():
    labels, probs = _fixture_scores()
    # Flagging the top k: precision 1, .5, .67, .75, .8, .67, .57, .5, .56, .5
    tier = choose_tier(labels, probs, 0.75)
    assert tier.enabled and tier.threshold == pytest.approx(0.55)  # top 5: 4 / 5 = 0.8, the lowest >= 0.75
    assert tier.precision == pytest.approx(0.8) and tier.recall == pytest.approx(4 / 5)
    assert choose_tier(labels, probs, 0.55).threshold == pytest.approx(0.15)  # top 9: 5 / 9
    # Only the single top row reaches 1.0: enough with min_positives=1, not with 2.
    assert choose_tier(labels, probs, 1.0).threshold == pytest.approx(0.95)
    off = choose_tier(labels, probs, 1.0, min_positives=2)
    assert not off.enabled and off.threshold is None and off.precision is None
    assert "not reached" in off.note and "best 0.800" in off.note  # the best with >= 2 positives


def test_unknown_labels_are_ignored_and_prevalence_lowers_precision():
    labels, probs = _fixture_scores()
    masked = np.r_[labels, -1, -1]
    assert choose_tier(masked, np.r_[probs, 0.99, 0.01], 0.75).threshold == pytest.approx(0.55)
    # At 10% prevalence the same cut-offs have far lower precision (top 5: 0.1 * 0.8 / (0.1 * 0.8 + 0.9 * 0.2)
    # = 0.31): 0.75 is reached only by the top row, with no false positive above it.
    assert choose_tier(labels, probs, 0.75, prevalence=0.1).threshold == pytest.approx(0.95)
    tier = choose_tier(labels, probs, 0.75, prevalence=0.1, min_positives=2)
    assert not tier.enabled and tier.prevalence == 0.1 and "prevalence 0.1" in tier.note
    assert not choose_tier(np.zeros(5, int), np.linspace(0, 1, 5), 0.5).enabled  # no positives: off


def test_action_is_the_most_severe_tier_reached():
    tiers = {"review": 0.5, "remove": 0.9}
    assert [action_of(s, tiers) for s in (0.1, 0.5, 0.89, 0.9, 1.0)] == ["none", "review", "review", "remove",
                                                                        "remove"]
    assert action_of(0.95, {"review": 0.5, "remove": None}) == "review"  # a tier that is off never acts
    assert action_of(0.95, {"review": None, "remove": None}) == "none"


def test_v1_card_loads_and_scores_as_before(tiny_artifact, v1_artifact, mixed_texts):
    v1 = Predictor.load(v1_artifact)
    v2 = Predictor.load(tiny_artifact)
    assert v1.card.schema_version == 1 and v2.card.schema_version == 2
    old, new = v1.predict(mixed_texts), v2.predict(mixed_texts)
    for a, b in zip(old, new):
        assert a["scores"] == b["scores"] and a["flags"] == b["flags"]  # same weights, thresholds, calibration
        assert set(a["actions"].values()) == {"none"}  # no tiers: nothing to act on
    assert {x for r in new for x in r["actions"].values()} == {"none", "review", "remove"}


def test_unknown_schema_version_and_v1_with_tiers_are_refused(tiny_artifact, tmp_path):
    model_dir = shutil.copytree(tiny_artifact, tmp_path / "future")
    raw = json.loads((model_dir / CARD_FILE).read_text())
    raw["schema_version"] = 4
    raw["policies"][0]["appeal"] = {"threshold": 0.2}  # a field this code does not know: the version speaks first
    (model_dir / CARD_FILE).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=r"schema_version 4 is unknown; this code reads \[1, 2, 3\]"):
        read_card(model_dir)
    card = read_card(tiny_artifact).model_copy(update={"schema_version": 1})
    with pytest.raises(ArtifactError, match="need policy card schema_version 2"):
        write_card(tmp_path, card)


def test_tier_overrides_follow_the_same_rule(tiny_artifact, mixed_texts):
    predictor = Predictor.load(tiny_artifact)
    probs = predictor.predict_proba(mixed_texts)
    got = predictor.predict(mixed_texts, tiers={"violence": {"review": 0.0, "remove": None}})
    for row, p in zip(got, probs):
        assert row["actions"]["violence"] == "review"  # every probability >= 0; remove is off
        want = action_of(p[0], predictor.card.tier_thresholds["abusive"])
        assert row["actions"]["abusive"] == want  # untouched policies keep the card's tiers
    for bad, match in (({"x": {"review": 0.5}}, "unknown policy"), ({"violence": {"block": 0.5}}, "unknown tier"),
                       ({"violence": {"review": 1.5}}, r"number in \[0, 1\]")):
        with pytest.raises(ValueError, match=match):
            predictor.predict(mixed_texts, tiers=bad)


def test_tier_report_on_known_scores(tiny_card):
    labels, probs = _fixture_scores()
    card = tiny_card()
    for spec in card.policies:
        spec.review = choose_tier(labels, probs, 0.55)
        spec.remove = choose_tier(labels, probs, 1.0, min_positives=2)  # off
    grid = np.stack([labels] * len(POLICIES), axis=1), np.stack([probs] * len(POLICIES), axis=1)
    report = tier_report(*grid, card, n_boot=200, seed=0)
    review, remove = report["abusive"]["review"], report["abusive"]["remove"]
    assert review["precision"] == pytest.approx(5 / 9) and review["recall"] == pytest.approx(1.0)
    assert review["flagged"] == 9 and review["precision_ci"][0] <= 5 / 9 <= review["precision_ci"][1]
    assert "precision" not in remove and remove["card"]["threshold"] is None
    text = tier_table(report, "test")
    assert "| abusive | remove | 1 |" in text and "off (off: precision 1 not reached" in text
    assert tier_report(*grid, tiny_card(tiers=False), n_boot=50, seed=0) == {}


def test_queue_report_counts_what_the_tiers_act_on(tiny_card):
    """Share of rows queued (review or remove on any policy) and removed, per source and overall, by the
    service's action rule, whatever the labels."""
    card = tiny_card()
    for spec in card.policies:
        spec.review, spec.remove = Tier(target_precision=0.6, threshold=0.5), Tier(target_precision=0.9, threshold=0.9)
    card.policy("violence").remove = Tier(target_precision=0.9, threshold=None)  # off
    probs = np.array([[0.1, 0.2, 0.3],    # a: none
                      [0.6, 0.1, 0.1],    # a: abusive review
                      [0.1, 0.1, 0.95],   # b: violence review (its remove tier is off)
                      [0.95, 0.7, 0.1]])  # b: abusive remove, harassment review
    n = len(probs)
    scored = Scored(np.zeros_like(probs), probs, np.full((n, 3), -1), ["t"] * n, np.array(["a", "a", "b", "b"]),
                    np.array([""] * n), [""] * n, [str(i) for i in range(n)])
    q = queue_report(scored, card)
    assert q["all"] == {"rows": 4, "queued": 0.75, "remove": 0.25, "abusive/queued": 0.5, "harassment/queued": 0.25,
                        "violence/queued": 0.25}
    assert (q["a"]["queued"], q["a"]["remove"], q["b"]["queued"], q["b"]["remove"]) == (0.5, 0.0, 1.0, 0.5)
    assert all(v["queued"] == 0 for v in queue_report(scored, tiny_card(tiers=False)).values())  # v1: acts on nothing


def test_tier_fields_are_validated():
    with pytest.raises(ValueError):
        Tier(target_precision=0.0)
    with pytest.raises(ValueError):
        Tier(target_precision=0.9, threshold=1.2)
