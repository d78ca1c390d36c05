"""The behaviour suite: the shipped file's coverage, its schema checks, and pass rates counted as documented."""

import numpy as np
import pytest
import yaml

from serving.policies import POLICIES
from training.config import ConfigError, repo_root
from training.evaluation.behaviour import Suite, behaviour_metrics, load_suite, suite_report
from training.evaluation.render import behaviour_table

SUITE = repo_root() / "data" / "behaviour_suite.yaml"
# The capabilities the suite must cover (issue 12), each with at least MIN_CASES hand-written cases.
REQUIRED = {"profanity_no_target", "insult_person", "slur", "reclaimed_ingroup", "negated_abuse", "counter_speech",
            "threat_direct", "threat_conditional", "threat_normative", "wish_celebrate_harm",
            "violent_words_harmless", "target_individual_group_object", "spelling_variants", "identity_neutral"}
MIN_CASES = 25


def test_shipped_suite_covers_every_capability():
    suite = load_suite(SUITE)
    assert REQUIRED <= set(suite.capabilities)
    assert all(len(suite.capabilities[c].cases) >= MIN_CASES for c in REQUIRED)
    texts = [case.text.casefold() for _, case in suite.cases()]
    assert len(set(texts)) == len(texts), "a case text appears twice"
    # Both outcomes are tested where the capability has both (the expected flags are not one constant).
    expected = np.array([[case.expect[p] for p in POLICIES] for _, case in suite.cases()])
    assert expected.any(axis=0).all() and (~expected).any(axis=0).all()


def _suite(cases_a, cases_b) -> Suite:
    def cases(name, rows):
        return [{"id": f"{name}-{i}", "text": f"{name} text {i}", "expect": dict(zip(POLICIES, e))}
                for i, e in enumerate(rows)]
    return Suite.model_validate({"version": 1, "policies": list(POLICIES), "capabilities": {
        "a": {"description": "a", "cases": cases("a", cases_a)},
        "b": {"description": "b", "cases": cases("b", cases_b)}}})


def test_pass_rates_count_a_case_only_when_every_flag_matches():
    suite = _suite([(True, False, False), (False, False, False)], [(True, True, True), (False, False, True)])
    probs = np.array([[0.9, 0.1, 0.1],    # a-0: matches
                      [0.9, 0.1, 0.1],    # a-1: abusive false positive
                      [0.9, 0.9, 0.2],    # b-0: violence false negative
                      [0.1, 0.1, 0.5]])   # b-1: matches (0.5 >= threshold 0.5)
    report = suite_report(suite, probs, {p: 0.5 for p in POLICIES})
    assert report["pass_rate"] == 0.5 and report["n"] == 4
    a, b = report["capabilities"]["a"], report["capabilities"]["b"]
    assert (a["pass_rate"], b["pass_rate"]) == (0.5, 0.5)
    assert a["policies"]["abusive"] == {"accuracy": 0.5, "false_positives": 1, "false_negatives": 0}
    assert b["policies"]["violence"] == {"accuracy": 0.5, "false_positives": 0, "false_negatives": 1}
    assert [f["id"] for f in a["failures"]] == ["a-1"] and [f["id"] for f in b["failures"]] == ["b-0"]
    assert report["policies"]["harassment"]["accuracy"] == 1.0
    metrics = behaviour_metrics(report)
    assert metrics["behaviour/pass_rate"] == 0.5 and metrics["behaviour/b/violence/accuracy"] == 0.5
    assert "| **all** | 4 | 0.500 |" in behaviour_table(report)


def test_report_refuses_probabilities_of_another_shape():
    with pytest.raises(ValueError, match="one row per case"):
        suite_report(_suite([(True, False, False)], [(False,) * 3]), np.zeros((3, 3)), {p: 0.5 for p in POLICIES})


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["capabilities"]["a"]["cases"][0]["expect"].pop("violence"), "a-0: expect must name exactly"),
    (lambda d: d["capabilities"]["b"]["cases"][0].update(id="a-0"), "duplicate case ids"),
    (lambda d: d.update(policies=list(reversed(POLICIES))), "names and order"),
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d["capabilities"]["a"]["cases"][0].update(label="x"), "label"),
])
def test_a_broken_suite_file_is_refused_naming_the_problem(tmp_path, edit, message):
    data = _suite([(True, False, False)], [(False, False, False)]).model_dump()
    edit(data)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as err:
        load_suite(path)
    assert str(path) in str(err.value)
