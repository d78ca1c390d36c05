"""The behaviour suite (CheckList-style): short hand-written cases per capability, each with the expected flag
of every policy (`data/behaviour_suite.yaml`). A case passes when every policy's flag at the card's thresholds
matches. Evaluation only: nothing trains, calibrates or chooses thresholds on it.

`tweetguard evaluate` reports the pass rate overall, per capability, and per capability x policy (flag
accuracy, false positives, false negatives) beside the other metrics; `tweetguard promote` prints both
models' rates, so a regression is visible at promotion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.artifact import calibrate
from serving.policies import POLICIES
from training.config import read_yaml, validate
from training.scorer import Scorer

SUITE_VERSION = 1
MAX_LISTED_FAILURES = 5  # per capability, in the report


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Case(_Strict):
    id: str
    text: str = Field(min_length=1)
    expect: dict[str, bool] = Field(description="expected flag of every policy")

    @model_validator(mode="after")
    def _every_policy(self) -> "Case":
        if set(self.expect) != set(POLICIES):
            raise ValueError(f"case {self.id}: expect must name exactly the policies {list(POLICIES)}, "
                             f"got {sorted(self.expect)}")
        return self


class Capability(_Strict):
    description: str
    cases: list[Case] = Field(min_length=1)


class Suite(_Strict):
    version: int
    policies: list[str]
    capabilities: dict[str, Capability] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Suite":
        if self.version != SUITE_VERSION:
            raise ValueError(f"version {self.version}: this code reads behaviour suite version {SUITE_VERSION}")
        if tuple(self.policies) != POLICIES:
            raise ValueError(f"policies {self.policies} != {list(POLICIES)} (names and order)")
        ids = [c.id for cap in self.capabilities.values() for c in cap.cases]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate case ids: {dup[:10]}")
        return self

    def cases(self) -> list[tuple[str, Case]]:
        """(capability, case) in file order."""
        return [(name, case) for name, cap in self.capabilities.items() for case in cap.cases]


def load_suite(path: str | Path) -> Suite:
    """The suite file, validated (ConfigError naming the file and the field on any problem)."""
    return validate(Suite, read_yaml(path), str(path))


def suite_report(suite: Suite, probs: np.ndarray, thresholds: dict[str, float]) -> dict:
    """Pass rates from calibrated probabilities [N, P] (one row per case, file order) at `thresholds`."""
    cases = suite.cases()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(cases), len(POLICIES)):
        raise ValueError(f"probs shape {probs.shape}: expected [{len(cases)}, {len(POLICIES)}] (one row per case)")
    flags = probs >= np.array([thresholds[p] for p in POLICIES])
    expected = np.array([[case.expect[p] for p in POLICIES] for _, case in cases])
    passed = (flags == expected).all(axis=1)
    names = np.array([name for name, _ in cases])
    capabilities = {}
    for name in suite.capabilities:
        sel = names == name
        fails = np.flatnonzero(sel & ~passed)
        capabilities[name] = {
            "n": int(sel.sum()),
            "pass_rate": float(passed[sel].mean()),
            "policies": {p: {"accuracy": float((flags[sel, j] == expected[sel, j]).mean()),
                             "false_positives": int((flags[sel, j] & ~expected[sel, j]).sum()),
                             "false_negatives": int((~flags[sel, j] & expected[sel, j]).sum())}
                         for j, p in enumerate(POLICIES)},
            "failures": [{"id": cases[i][1].id, "text": cases[i][1].text,
                          "expected": {p: bool(expected[i, j]) for j, p in enumerate(POLICIES)},
                          "scores": {p: float(probs[i, j]) for j, p in enumerate(POLICIES)}}
                         for i in fails[:MAX_LISTED_FAILURES]],
        }
    return {"n": len(cases), "pass_rate": float(passed.mean()),
            "policies": {p: {"accuracy": float((flags[:, j] == expected[:, j]).mean())} for j, p in enumerate(POLICIES)},
            "capabilities": capabilities,
            # Per case, file order: what a paired comparison of two models resamples (evaluation.compare).
            "cases": [{"id": case.id, "capability": name, "passed": bool(ok)} for (name, case), ok in zip(cases, passed)]}


def run_suite(scorer: Scorer, path: str | Path) -> dict:
    """Score every case through `scorer` (the serving path) at its card's thresholds."""
    suite = load_suite(path)
    texts = [case.text for _, case in suite.cases()]
    probs = calibrate(np.asarray(scorer.logits(texts), dtype=np.float64), scorer.card)
    return {"file": str(path), **suite_report(suite, probs, scorer.card.thresholds)}


def behaviour_metrics(report: dict) -> dict[str, float]:
    """The suite's numbers as flat metric keys (`behaviour/pass_rate`, `behaviour/<capability>/pass_rate`,
    `behaviour/<capability>/<policy>/accuracy`)."""
    out = {"behaviour/pass_rate": report["pass_rate"]}
    for p, m in report["policies"].items():
        out[f"behaviour/{p}/accuracy"] = m["accuracy"]
    for name, cap in report["capabilities"].items():
        out[f"behaviour/{name}/pass_rate"] = cap["pass_rate"]
        out.update({f"behaviour/{name}/{p}/accuracy": m["accuracy"] for p, m in cap["policies"].items()})
    return out

