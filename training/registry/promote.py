"""`tweetguard promote`: the gate that moves `@champion`.

    tweetguard promote --candidate models:/tweetguard/4 [--force --reason "..."] [--rollback] [--strict]

Candidate and current champion are both re-scored now, on the same validation rows. For every policy the
paired bootstrap (the same resampled tweets for both models) gives a 95% interval of
PR-AUC(candidate) - PR-AUC(champion). The candidate is refused when, for any policy, that whole interval lies
below zero: a drop larger than resampling noise explains. With `data.feedback`, the same gate also runs on the
feedback source's blind-labelled test carve (the latest human labels; docs/labelling.md). Other test metrics are
printed beside, never used to decide (choosing on test would make it a second validation set). `@challenger`
always marks the last candidate.

Every decision is tagged on the candidate version (`promotion.decision`, `.evidence`, `.reason`, ...). Past
champions are kept, oldest first, in the registered model's `champion_history` tag, which `--rollback` pops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from serving.policies import POLICIES
from training.config import Config
from training.evaluation.behaviour import run_suite
from training.evaluation.evaluate import load_scorer
from training.metrics import masked_metrics, paired_bootstrap_diff
from training.evaluation.render import table
from training.scorer import score_split
from training.tracking.refs import resolve_model_ref
from training.tracking.versions import (
    CHALLENGER,
    CHAMPION,
    TEACHER_REF_TAG,
    TEACHER_VERSION_TAG,
    alias_version,
    champion_history,
    registered,
    set_alias,
    set_champion_history,
    set_version_tags,
    version_tags,
)


@dataclass
class Decision:
    name: str
    candidate: str  # version
    champion_before: str | None
    outcome: str  # promoted | refused | forced | unchanged | rolled_back
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    table: str = ""

    @property
    def promoted(self) -> bool:
        return self.outcome in ("promoted", "forced", "rolled_back")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _metrics_of(name: str, version: str, splits: dict, uri: str, batch_size: int, suite: str | None) -> dict:
    """{split: (Scored, metrics at the version's own thresholds)} for one registered version, plus
    "behaviour": the behaviour suite's pass rates (shown beside, never deciding)."""
    model_dir = resolve_model_ref(f"models:/{name}/{version}", tracking_uri=uri)
    scorer = load_scorer(model_dir, batch_size=batch_size)
    out = {}
    for split, data in splits.items():
        scored = score_split(scorer, data)
        out[split] = (scored, masked_metrics(scored.labels, scored.probs, scorer.card.thresholds))
    out["behaviour"] = run_suite(scorer, suite) if suite else None
    return out


def gate(labels: np.ndarray, champion_probs: np.ndarray, candidate_probs: np.ndarray, n: int = 1000,
         seed: int = 0, where: str = "validation") -> tuple[list[str], dict[str, dict]]:
    """(reasons to refuse, per-policy evidence) from the paired bootstrap of the PR-AUC difference on `where`."""
    ci = paired_bootstrap_diff(labels, champion_probs, candidate_probs, n=n, seed=seed)
    before, after = masked_metrics(labels, champion_probs), masked_metrics(labels, candidate_probs)
    reasons, evidence = [], {}
    for p in POLICIES:
        key = f"{p}/pr_auc"
        if key not in before or key not in after or key not in ci:
            evidence[p] = {"status": f"not judged: {where} lacks positives or negatives"}
            continue
        lo, hi = ci[key]
        evidence[p] = {"champion": round(before[key], 4), "candidate": round(after[key], 4),
                       "delta": round(after[key] - before[key], 4), "ci95": [round(lo, 4), round(hi, 4)],
                       "n_pos": int(before[f"{p}/n_pos"]), "n_neg": int(before[f"{p}/n_neg"])}
        if hi < 0:
            reasons.append(f"{p}: {where} PR-AUC {before[key]:.4f} -> {after[key]:.4f} "
                           f"(delta {after[key] - before[key]:+.4f}, paired 95% CI [{lo:+.4f}, {hi:+.4f}] below 0)")
    return reasons, evidence


def side_by_side(val: tuple[dict, dict], test: tuple[dict, dict] | None, champion: str, candidate: str) -> str:
    header = ["metric", f"champion v{champion} (val)", f"candidate v{candidate} (val)", "delta"]
    if test:
        header += ["champion (test)", "candidate (test)"]
    rows = []
    for p in POLICIES:
        for k in ("pr_auc", "roc_auc", "f1"):
            key = f"{p}/{k}"
            a, b = val[0].get(key), val[1].get(key)
            if a is None or b is None:
                continue
            row = [key, f"{a:.4f}", f"{b:.4f}", f"{b - a:+.4f}"]
            if test:
                row += [f"{test[0].get(key, float('nan')):.4f}", f"{test[1].get(key, float('nan')):.4f}"]
            rows.append(row)
    return table(header, rows)


def behaviour_side_by_side(champion_suite: dict | None, candidate_suite: dict | None, champion: str,
                           candidate: str) -> str:
    """Behaviour-suite pass rates of both models, overall and per capability (informs, never decides)."""
    if not champion_suite or not candidate_suite:
        return ""
    rows = [[name, f"{c['pass_rate']:.3f}", f"{candidate_suite['capabilities'][name]['pass_rate']:.3f}",
             f"{candidate_suite['capabilities'][name]['pass_rate'] - c['pass_rate']:+.3f}"]
            for name, c in champion_suite["capabilities"].items() if name in candidate_suite["capabilities"]]
    rows.append(["all", f"{champion_suite['pass_rate']:.3f}", f"{candidate_suite['pass_rate']:.3f}",
                 f"{candidate_suite['pass_rate'] - champion_suite['pass_rate']:+.3f}"])
    return "\n\n" + table(["behaviour suite pass rate", f"champion v{champion}", f"candidate v{candidate}",
                             "delta"], rows)


def feedback_carve(test):
    """The blind-labelled texts of the feedback source's test carve (the latest verdicts, labelled without the
    model's view; docs/labelling.md), or None when the test split has none."""
    if test is None:
        return None
    carve = test.filter(lambda r: r["source"] == "feedback" and r["subset"] == "blind")
    return carve if len(carve) else None


def promote(candidate_ref: str, cfg: Config, *, validation, test=None, feedback=None, tracking_uri: str,
            force: bool = False, reason: str | None = None) -> Decision:
    """Compare, decide, and (if promoting) move the aliases; tags record the decision either way.

    `feedback` (`feedback_carve`): the blind-labelled feedback test carve. The same gate runs on it as on
    validation, and a candidate worse there beyond the interval is refused: it is the one sample of what the
    service meets, labelled by the people who act on it."""
    if force and not (reason and reason.strip()):
        raise ValueError("--force needs --reason \"...\": the override is recorded on the version")
    name, alias, version = registered(candidate_ref)
    uri = tracking_uri
    candidate = version or alias_version(name, alias, uri)
    if candidate is None:
        raise ValueError(f"{candidate_ref}: registered model {name!r} has no alias {alias!r}")
    refuse_distilled(name, candidate, cfg, uri)
    champion = alias_version(name, CHAMPION, uri)
    if champion is None:
        decision = Decision(name, candidate, None, "promoted", ["no champion yet: the first candidate becomes it"])
    elif champion == candidate:
        return Decision(name, candidate, champion, "unchanged", [f"v{candidate} is already {CHAMPION}"])
    else:
        splits = {"validation": validation, **({"test": test} if test is not None else {}),
                  **({"feedback": feedback} if feedback is not None else {})}
        suite = cfg.evaluation.behaviour_suite
        champ = _metrics_of(name, champion, splits, uri, cfg.evaluation.batch_size, suite)
        cand = _metrics_of(name, candidate, splits, uri, cfg.evaluation.batch_size, suite)
        (champ_val, _), (cand_val, _) = champ["validation"], cand["validation"]
        reasons, evidence = gate(champ_val.labels, champ_val.probs, cand_val.probs,
                                 n=cfg.evaluation.bootstrap_samples, seed=cfg.evaluation.seed)
        evidence = {"validation_rows": len(validation), **evidence}
        cited = ["no policy's validation PR-AUC dropped beyond the paired-bootstrap 95% interval"]
        if feedback is not None:
            (champ_fb, _), (cand_fb, _) = champ["feedback"], cand["feedback"]
            where = f"feedback carve ({len(feedback)} blind-labelled texts)"
            fb_reasons, fb_evidence = gate(champ_fb.labels, champ_fb.probs, cand_fb.probs,
                                           n=cfg.evaluation.bootstrap_samples, seed=cfg.evaluation.seed,
                                           where=where)
            reasons += fb_reasons
            evidence["feedback"] = {"rows": len(feedback), **fb_evidence}
            judged = [p for p in POLICIES if "delta" in fb_evidence[p]]
            cited.append(f"{where}: no policy's PR-AUC dropped beyond the interval (judged: "
                         f"{', '.join(judged) or 'none, too few positives or negatives'})")
        val = (champ["validation"][1], cand["validation"][1])
        test_metrics = (champ["test"][1], cand["test"][1]) if test is not None else None
        outcome = "forced" if reasons and force else "refused" if reasons else "promoted"
        decision = Decision(name, candidate, champion, outcome, reasons or cited, evidence,
                            side_by_side(val, test_metrics, champion, candidate)
                            + behaviour_side_by_side(champ["behaviour"], cand["behaviour"], champion, candidate))
    if decision.outcome == "forced":
        decision.reasons.append(f"forced: {reason}")
    _record(decision, uri)
    return decision


def refuse_distilled(name: str, version: str, cfg: Config, uri: str) -> None:
    """A distilled student (`tweetguard distill`: tagged with its teacher, registered under distill.registered_model)
    is a fast tier beside the champion, never a candidate for any @champion: ValueError saying how to serve it."""
    tags = version_tags(name, version, uri)
    if TEACHER_REF_TAG not in tags and name != cfg.distill.registered_model:
        return
    teacher = tags.get(TEACHER_REF_TAG, "?") + (f" = v{tags[TEACHER_VERSION_TAG]}" if TEACHER_VERSION_TAG in tags else "")
    raise ValueError(f"{name} v{version} is a distilled fast-tier student (teacher {teacher}): it is never a candidate "
                     f"for @{CHAMPION}; serve it as it is: tweetguard package --model models:/{name}/{version}")


def _record(d: Decision, uri: str) -> None:
    tags = {"promotion.decision": d.outcome, "promotion.time": _now(),
            "promotion.champion_before": d.champion_before or "none",
            "promotion.reason": "; ".join(d.reasons)[:4000],
            "promotion.evidence": json.dumps(d.evidence, separators=(",", ":"))[:4000]}
    set_version_tags(d.name, d.candidate, tags, uri)
    set_alias(d.name, CHALLENGER, d.candidate, uri)  # marks the last candidate, promoted or not
    if d.promoted:
        if d.champion_before:
            set_champion_history(d.name, champion_history(d.name, uri) + [d.champion_before], uri)
        set_alias(d.name, CHAMPION, d.candidate, uri)


def rollback(name: str, *, tracking_uri: str, reason: str | None = None) -> Decision:
    """Put `@champion` back on the previous champion (the last entry of the history)."""
    uri = tracking_uri
    history = champion_history(name, uri)
    current = alias_version(name, CHAMPION, uri)
    if not history:
        raise ValueError(f"{name}: no previous champion recorded (registered model tag champion_history is empty)")
    previous = history[-1]
    set_alias(name, CHAMPION, previous, uri)
    set_champion_history(name, history[:-1], uri)
    why = f"rolled back from v{current}" + (f": {reason}" if reason else "")
    set_version_tags(name, previous, {"promotion.decision": "rolled_back", "promotion.time": _now(),
                                      "promotion.reason": why, "promotion.champion_before": current or "none"}, uri)
    if current:
        set_version_tags(name, current, {"promotion.rolled_back_at": _now()}, uri)
    return Decision(name, previous, current, "rolled_back", [why])


def describe_decision(d: Decision) -> str:
    head = {"promoted": f"PROMOTED: {d.name} v{d.candidate} is now @{CHAMPION}",
            "forced": f"PROMOTED (FORCED): {d.name} v{d.candidate} is now @{CHAMPION}",
            "refused": f"REFUSED: {d.name} v{d.candidate} stays @{CHALLENGER}; @{CHAMPION} stays "
                       f"v{d.champion_before}",
            "unchanged": f"UNCHANGED: v{d.candidate} is already @{CHAMPION}",
            "rolled_back": f"ROLLED BACK: @{CHAMPION} is v{d.candidate} again (was v{d.champion_before})"}[d.outcome]
    return "\n".join([head, *[f"  - {r}" for r in d.reasons], "", d.table]).rstrip() + "\n"
