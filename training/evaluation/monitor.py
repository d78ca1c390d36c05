"""`tweetguard monitor`: has what the service scores drifted from what the model was calibrated on?

    tweetguard monitor --model models:/tweetguard@champion --scores served.jsonl [--config ...] [--out DIR]

Reads a served score log (`TWEETGUARD_SCORE_LOG`, `serving.scorelog`), keeps the lines of the model `--model` names
(matched on the sha256 of its `policy_card.json`: the same bytes in the registry and the BentoML store), and
compares each policy's served scores with the version's reference (its validation scores,
`training.evaluation.reference`): KS statistic and p-value (`scipy.stats.ks_2samp`), PSI (`psi`), mean score and flag
rate (at the card's thresholds on both sides; the flags as served, which per-request thresholds may move, beside
them); text lengths the same way, for information. Writes `monitor.json`, `monitor.md` and `score_drift.png`.

Exit codes (for a scheduler): 0 no policy's PSI reaches `monitor.psi_threshold`; 3 drift (at least one does); 4 fewer
than `monitor.min_rows` lines of the model in the log (no verdict); 2 unusable input (the CLI's error code).
With tens of thousands of lines KS p-values are tiny for any visible shift: PSI, not the p-value, decides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp

from serving.artifact import CARD_FILE, PolicyCard, file_sha256, read_card
from serving.policies import POLICIES
from training.config import Config, MonitorConfig
from training.data.tables import BadInputRow, describe_bad_rows
from training.evaluation.render import fmt, table
from training.evaluation.reference import Reference, reference_for

EXIT_OK, EXIT_DRIFT, EXIT_TOO_FEW = 0, 3, 4
REPORT_JSON, REPORT_MD, FIGURE = "monitor.json", "monitor.md", "score_drift.png"
PSI_FLOOR = 1e-4  # share given to an empty bin: ln(0) would make any PSI infinite


def psi(reference: np.ndarray, served: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `served` against `reference`: sum over bins of (s - r) * ln(s / r), where r and
    s are the shares of each sample in the bin. Bins split the reference at its quantiles (each holds ~1/bins of
    it; tied quantiles merge bins); a value on an edge counts in the upper bin; an empty bin's share is PSI_FLOOR."""
    reference, served = np.asarray(reference, dtype=np.float64), np.asarray(served, dtype=np.float64)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))

    def shares(x: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
        return np.maximum(counts / len(x), PSI_FLOOR)

    r, s = shares(reference), shares(served)
    return float(np.sum((s - r) * np.log(s / r)))


@dataclass
class ServedLog:
    """The lines of one model in a score log, as arrays (row-aligned), and what was skipped."""

    scores: np.ndarray  # [N, P]
    flags: np.ndarray  # [N, P] bool, as served
    lengths: np.ndarray  # [N] characters
    truncated: np.ndarray  # [N] bool
    lines: int = 0  # non-blank lines read
    times: tuple[str, str] | None = None  # first and last time of the kept lines
    other_models: dict[str, int] = field(default_factory=dict)  # "name:version (run ...)" -> lines skipped
    bad: list[BadInputRow] = field(default_factory=list)


def _check_line(row: object) -> str | None:
    """Why a parsed line is not a usable score line (None: it is)."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    for key, kind in (("scores", dict), ("flags", dict), ("length", int), ("truncated", bool)):
        if not isinstance(row.get(key), kind) or (kind is int and isinstance(row[key], bool)):
            return f"field {key!r} missing or not a {kind.__name__}"
    for p in POLICIES:
        score, flag = row["scores"].get(p), row["flags"].get(p)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
            return f"scores.{p} missing or not a probability in [0, 1]"
        if not isinstance(flag, bool):
            return f"flags.{p} missing or not a boolean"
    return None


def read_score_log(path: str | Path, card_sha256: str) -> ServedLog:
    """Parse a score log; keep the lines whose model.card_sha256 is `card_sha256`. Bad lines are listed with their
    line numbers; other models' lines are counted per model."""
    path = Path(path)
    scores, flags, lengths, truncated, times = [], [], [], [], []
    out = ServedLog(np.empty((0, len(POLICIES))), np.empty((0, len(POLICIES)), bool), np.empty(0, int),
                    np.empty(0, bool))
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            out.lines += 1
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
                out.bad.append(BadInputRow(number, f"not valid JSON ({getattr(e, 'msg', e)})"))
                continue
            model = row.get("model") if isinstance(row, dict) else None
            if not isinstance(model, dict) or not isinstance(model.get("card_sha256"), str):
                out.bad.append(BadInputRow(number, "no model.card_sha256 (not a tweetguard score line)"))
                continue
            if model["card_sha256"] != card_sha256:
                label = f"{model.get('name')}:{model.get('version')} (run {model.get('run_id')})"
                out.other_models[label] = out.other_models.get(label, 0) + 1
                continue
            problem = _check_line(row)
            if problem:
                out.bad.append(BadInputRow(number, problem))
                continue
            scores.append([float(row["scores"][p]) for p in POLICIES])
            flags.append([row["flags"][p] for p in POLICIES])
            lengths.append(row["length"])
            truncated.append(row["truncated"])
            times.append(str(row.get("time", "")))
    if scores:
        out.scores, out.flags = np.array(scores, dtype=np.float64), np.array(flags, dtype=bool)
        out.lengths, out.truncated = np.array(lengths), np.array(truncated, dtype=bool)
        out.times = (min(times), max(times))
    return out


def _compare(reference: np.ndarray, served: np.ndarray, bins: int) -> dict:
    ks = ks_2samp(reference, served)
    return {"ks": float(ks.statistic), "ks_pvalue": float(ks.pvalue), "psi": psi(reference, served, bins)}


def drift_report(ref: Reference, served: ServedLog, card: PolicyCard, mcfg: MonitorConfig) -> dict:
    """Per policy: KS, PSI, means and flag rates of served vs reference scores; the verdict and exit code."""
    rows = len(served.scores)
    report = {"served_rows": rows, "reference_rows": ref.rows, "psi_threshold": mcfg.psi_threshold,
              "min_rows": mcfg.min_rows, "policies": {}, "length": None}
    if rows < mcfg.min_rows:
        report.update(verdict=f"too few rows: {rows} served lines of this model, monitor.min_rows is "
                              f"{mcfg.min_rows}", exit_code=EXIT_TOO_FEW, drifted=[])
        return report
    for j, p in enumerate(POLICIES):
        r, s, t = ref.scores[:, j], served.scores[:, j], card.thresholds[p]
        report["policies"][p] = {
            **_compare(r, s, mcfg.psi_bins), "mean_reference": float(r.mean()), "mean_served": float(s.mean()),
            "threshold": t, "flag_rate_reference": float((r >= t).mean()), "flag_rate_served": float((s >= t).mean()),
            "flag_rate_as_served": float(served.flags[:, j].mean())}
    report["length"] = {**_compare(ref.lengths, served.lengths, mcfg.psi_bins),
                        "median_reference": float(np.median(ref.lengths)),
                        "median_served": float(np.median(served.lengths)),
                        "truncated_rate_served": float(served.truncated.mean())}
    drifted = [p for p, m in report["policies"].items() if m["psi"] >= mcfg.psi_threshold]
    report["drifted"] = drifted
    if drifted:
        report.update(verdict=f"drift: PSI >= {mcfg.psi_threshold} for {', '.join(drifted)}", exit_code=EXIT_DRIFT)
    else:
        report.update(verdict=f"no drift: every policy's PSI < {mcfg.psi_threshold}", exit_code=EXIT_OK)
    return report


def render_markdown(report: dict) -> str:
    m, log, ref = report["model"], report["log"], report["reference"]
    head = (f"Served log `{log['path']}`: {log['lines']} lines; {report['served_rows']} of this model (card sha256 "
            f"`{m['card_sha256'][:12]}`, {log['first_time']} .. {log['last_time']}); "
            f"{sum(log['other_models'].values())} of other models; {len(log['bad'])} bad.")
    lines = [f"# Score drift: {m['label']}", "", head,
             *[f"- skipped, another model: {k}: {v} line(s)" for k, v in log["other_models"].items()],
             *[f"- bad line {b['line']}: {b['reason']}" for b in log["bad"][:20]], "",
             f"Reference: {report['reference_rows']} {ref['split']} rows, {ref['source']} ({ref['created']}).", "",
             f"**{report['verdict']}** (exit {report['exit_code']})", ""]
    if report["policies"]:
        header = ["policy", "PSI", "KS", "KS p-value", "mean ref", "mean served", "threshold", "flag rate ref",
                  "flag rate served", "flag rate as served"]
        rows = [[p, fmt(d["psi"]), fmt(d["ks"]), f"{d['ks_pvalue']:.2g}", fmt(d["mean_reference"]),
                 fmt(d["mean_served"]), fmt(d["threshold"]), fmt(d["flag_rate_reference"]),
                 fmt(d["flag_rate_served"]), fmt(d["flag_rate_as_served"])] for p, d in report["policies"].items()]
        n = report["length"]
        length = (f"Text length (information, not gated): PSI {fmt(n['psi'])}, KS {fmt(n['ks'])}, median "
                  f"{n['median_reference']:.0f} (ref) vs {n['median_served']:.0f} (served) characters; "
                  f"{n['truncated_rate_served']:.1%} of served texts truncated.")
        note = ("Flag rates ref / served: at the card's thresholds; as served: the flags in the log (a request may "
                "override thresholds).")
        lines += [table(header, rows), "", note, "", length, "", f"![score drift]({FIGURE})", ""]
    return "\n".join(lines)


def overturn_report(rows: list[dict]) -> dict:
    """Moderators' verdicts (`serving.feedback.FeedbackStore.rows()`, each reviewer's latest revision per decision)
    against what was decided, per served model (the decision's `name:version`) and policy: of the flagged
    decisions labelled true / false, the share overturned (labelled false), and the same per decision tier
    (review / remove, by the decision's own tier thresholds); plus verdicts that report a miss (true, not
    flagged) and "unsure" ones. A climbing overturn rate is the earliest sign a model is wrong in production."""
    from serving.metrics import verdict_outcomes

    latest: dict[tuple[str, str], dict] = {}
    for r in rows:  # oldest first: a later revision replaces an earlier one
        latest[(r["decision_sha256"], r["reviewer"])] = r
    out: dict[str, dict] = {}
    for r in latest.values():
        d = r["decision"]
        for policy, (outcome, action) in verdict_outcomes(d, r["labels"]).items():
            entry = out.setdefault(d["model"], {}).setdefault(policy, {
                "verdicts": 0, "upheld": 0, "overturned": 0, "missed": 0, "agreed": 0, "unsure": 0, "tiers": {}})
            entry["verdicts"] += 1
            entry[outcome] += 1
            if action != "none" and outcome in ("upheld", "overturned"):
                tier = entry["tiers"].setdefault(action, {"upheld": 0, "overturned": 0})
                tier[outcome] += 1
    for policies in out.values():
        for entry in policies.values():
            judged = entry["upheld"] + entry["overturned"]
            entry["overturn_rate"] = entry["overturned"] / judged if judged else float("nan")
            for tier in entry["tiers"].values():
                tier["overturn_rate"] = tier["overturned"] / (tier["upheld"] + tier["overturned"])
    return out


def overturn_lines(report: dict) -> list[str]:
    """The overturn table (markdown), for the report and the CLI."""
    rows = [[model, p, e["verdicts"], f"{e['upheld']} / {e['overturned']}", fmt(e["overturn_rate"]),
             ", ".join(f"{t} {fmt(v['overturn_rate'])} ({v['upheld'] + v['overturned']})"
                       for t, v in sorted(e["tiers"].items())) or "-", e["missed"], e["unsure"]]
            for model, policies in report.items() for p, e in policies.items()]
    if not rows:
        return ["No verdicts in the feedback store."]
    return [table(["served model", "policy", "verdicts", "flags upheld / overturned", "overturn rate",
                   "overturn rate per tier (n)", "missed", "unsure"], rows)]


@dataclass
class MonitorResult:
    report: dict
    out_dir: Path
    exit_code: int


def monitor(ref: str, scores_path: str | Path, cfg: Config, *, out_dir: str | Path | None = None,
            tracking_uri: str | None = None, feedback_db: str | None = None) -> MonitorResult:
    """Resolve `ref`, read the log, get (or compute) the reference, compare, write the report directory; with
    `feedback_db` (a SQLAlchemy URL of the service's verdict store), the overturn rates beside the drift."""
    from training.evaluation.plots import score_drift
    from training.tracking.refs import is_mlflow_uri, resolve_model_ref
    from training.tracking.runs import resolve_uri
    from training.tracking.versions import identify

    if not Path(scores_path).is_file():
        raise FileNotFoundError(f"--scores {scores_path}: no such file")
    uri = resolve_uri(tracking_uri or cfg.tracking.uri)
    model_dir = resolve_model_ref(ref, tracking_uri=uri)
    card = read_card(model_dir)
    card_sha = file_sha256(model_dir / CARD_FILE)
    served = read_score_log(scores_path, card_sha)  # before the reference: a log's mistakes show in seconds
    identity = identify(ref, uri, card.mlflow_run_id)
    label = identity.label if identity.version else Path(str(model_dir)).name
    out = Path(out_dir) if out_dir else Path(cfg.monitor.output_dir) / f"monitor-{label.replace(' ', '-')}"
    out.mkdir(parents=True, exist_ok=True)
    # Only a registry or run reference has a run to keep the reference in; a directory's is computed each time.
    reference = reference_for(model_dir, identity.run_id if is_mlflow_uri(ref) else None, cfg, uri, out)
    report = drift_report(reference, served, card, cfg.monitor)
    report["model"] = {**identity.tags(), "label": label, "card_sha256": card_sha}
    report["reference"] = reference.meta
    report["log"] = {"path": str(scores_path), "lines": served.lines, "other_models": served.other_models,
                     "bad": [{"line": b.line, "reason": b.reason} for b in served.bad],
                     "first_time": served.times[0] if served.times else None,
                     "last_time": served.times[1] if served.times else None}
    if feedback_db:
        from serving.feedback import FeedbackStore

        report["feedback"] = overturn_report(FeedbackStore(feedback_db).rows())
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / REPORT_MD).write_text(render_markdown(report) + ("\n## Moderators' verdicts\n\n" + "\n".join(
        overturn_lines(report["feedback"])) + "\n" if feedback_db else ""), encoding="utf-8")
    if report["policies"]:
        fig = score_drift(reference.scores, served.scores, card.thresholds,
                          {p: d["psi"] for p, d in report["policies"].items()})
        fig.savefig(out / FIGURE, dpi=110)
    return MonitorResult(report, out, report["exit_code"])


def describe(result: MonitorResult) -> str:
    """What the CLI prints: skipped and bad lines, the table, the verdict, where the report is."""
    r, log = result.report, result.report["log"]
    ref = r["reference"]
    head = (f"{r['model']['label']}: {r['served_rows']} of {log['lines']} log lines are this model's; reference: "
            f"{r['reference_rows']} {ref['split']} rows ({ref['source']}, {ref['created']})")
    lines = [head]
    lines += [f"skipped {n} line(s) of another model: {k}" for k, n in log["other_models"].items()]
    if log["bad"]:
        bad = [BadInputRow(b["line"], b["reason"]) for b in log["bad"]]
        lines.append(f"skipped {len(bad)} bad lines:\n{describe_bad_rows(bad, Path(log['path']))}")
    if r["policies"]:
        lines.append(table(["policy", "PSI", "KS", "flag rate ref", "flag rate served"],
                           [[p, fmt(d["psi"]), fmt(d["ks"]), fmt(d["flag_rate_reference"]),
                             fmt(d["flag_rate_served"])] for p, d in r["policies"].items()]))
    if "feedback" in r:
        lines += ["moderators' verdicts:", *overturn_lines(r["feedback"])]
    lines += [f"{r['verdict']} (exit {result.exit_code})", f"report: {result.out_dir / REPORT_MD}"]
    return "\n".join(lines)

