"""Two models on the same rows, B - A with paired-bootstrap 95% CIs (`tweetguard evaluate --compare-to A`).

Both models are scored on the same split; every interval resamples the same tweets for both (`resample_counts`
with one seed), so a shared hard or easy draw cancels and the interval is far tighter than two separate ones.
Scopes: all rows; each source; and, when the two models were trained on different sources, the rows of the
sources both were trained on ("shared sources": e.g. violence on the sources that had violence labels before
new data arrived). Also each published-comparable benchmark and goal measure (at each model's own thresholds;
a goal measure whose rows are not in the split is listed as not in this data) and the behaviour suite per
capability (cases resampled within the capability). A difference whose interval excludes 0 is marked. Numbers
only: `render_comparison` writes the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serving.policies import POLICIES
from training.metrics import masked_metrics, paired_bootstrap_diff, resample_counts
from training.evaluation.published import BENCHMARKS, NOT_IN_DATA, benchmark_flags, benchmark_rows, benchmark_stat
from training.evaluation.render import fmt, table
from training.tracking.runs import Run, client, resolve_uri

METRICS = ("pr_auc", "roc_auc", "f1", "ece")  # per policy; f1 at each model's own threshold


def _row(scope: str, metric: str, a: float, b: float, ci: tuple[float, float] | None, n: int) -> dict:
    lo, hi = ci if ci else (float("nan"), float("nan"))
    return {"scope": scope, "metric": metric, "a": a, "b": b, "diff": b - a, "ci_low": lo, "ci_high": hi, "n": n,
            "significant": bool(ci and (lo > 0 or hi < 0))}


def metric_rows(scope: str, sel: np.ndarray, a, b, thr_a: dict, thr_b: dict, n: int, seed: int) -> list[dict]:
    labels = b.labels[sel]
    ma, mb = masked_metrics(labels, a.probs[sel], thr_a), masked_metrics(labels, b.probs[sel], thr_b)
    ci = paired_bootstrap_diff(labels, a.probs[sel], b.probs[sel], n=n, seed=seed, thresholds_a=thr_a,
                               thresholds_b=thr_b)
    rows = []
    for p in POLICIES:
        for k in METRICS:
            key = f"{p}/{k}"
            if key in ma and key in mb and key in ci:
                rows.append(_row(scope, key, ma[key], mb[key], ci[key], int(mb[f"{p}/n_pos"])))
    return rows


def _paired(stat, n_rows: int, n: int, seed: int) -> tuple[float, tuple[float, float]]:
    """(point difference, 95% CI) of stat(w) -> [B] differences, over `n` paired resamples of `n_rows` rows."""
    rng = np.random.default_rng(seed)
    point = float(stat(np.ones((1, n_rows)))[0])
    samples = np.concatenate([stat(resample_counts(rng, n_rows, min(100, n - s))) for s in range(0, n, 100)])
    samples = samples[~np.isnan(samples)]
    lo, hi = np.percentile(samples, [2.5, 97.5]) if len(samples) else (np.nan, np.nan)
    return point, (float(lo), float(hi))


def compare(a, b, *, n: int = 1000, seed: int = 0, data_root: str | None = None,
            slur_swear_terms: str | None = None) -> dict:
    """`a`, `b`: `evaluate.EvalResult`s of the same split (same rows, same order). Returns {"a", "b", "rows",
    "not_in_data" (goal measures whose rows are not in the split), ...}."""
    sa, sb = a.scored, b.scored
    if list(sa.ids) != list(sb.ids):
        raise ValueError("the two evaluations scored different rows: compare models on the same split and data")
    thr_a, thr_b = a.report["thresholds"], b.report["thresholds"]
    rows = metric_rows("all", np.ones(len(sb.ids), dtype=bool), sa, sb, thr_a, thr_b, n, seed)
    for source in sorted(set(sb.sources.tolist())):
        rows += metric_rows(f"source {source}", sb.sources == source, sa, sb, thr_a, thr_b, n, seed)
    src_a, src_b = set(a.train_sources), set(b.train_sources)
    shared = src_a & src_b
    if shared and src_a != src_b:
        sel = np.isin(sb.sources, sorted(shared))
        rows += metric_rows("shared sources", sel, sa, sb, thr_a, thr_b, n, seed)
    not_in_data = []
    for bench in BENCHMARKS:
        idx, y = benchmark_rows(bench, sb, data_root, slur_swear_terms)
        if not len(idx):
            not_in_data += [f"benchmark {bench.name}"] if bench.goal else []
            continue
        fa, fb = benchmark_flags(bench, sa.probs[idx], thr_a), benchmark_flags(bench, sb.probs[idx], thr_b)

        def delta(w, bench=bench, y=y, fa=fa, fb=fb):
            return benchmark_stat(bench, y, fb, w) - benchmark_stat(bench, y, fa, w)

        diff, ci = _paired(delta, len(idx), n, seed)
        va = float(benchmark_stat(bench, y, fa, np.ones((1, len(idx))))[0])
        rows.append(_row(f"benchmark {bench.name}", bench.metric, va, va + diff, ci, len(idx)))
    ba, bb = a.report.get("behaviour"), b.report.get("behaviour")
    if ba and bb and "cases" in ba and "cases" in bb and [c["id"] for c in ba["cases"]] == [c["id"] for c in bb["cases"]]:
        caps = np.array([c["capability"] for c in bb["cases"]])
        pa = np.array([c["passed"] for c in ba["cases"]], dtype=np.float64)
        pb = np.array([c["passed"] for c in bb["cases"]], dtype=np.float64)
        for name in ["all", *dict.fromkeys(caps.tolist())]:
            sel = np.ones(len(caps), bool) if name == "all" else caps == name
            xa, xb = pa[sel], pb[sel]
            diff, ci = _paired(lambda w, xa=xa, xb=xb: w @ (xb - xa) / w.sum(1), int(sel.sum()), n, seed)
            rows.append(_row(f"behaviour {name}", "pass_rate", float(xa.mean()), float(xb.mean()), ci,
                             int(sel.sum())))
    return {"a": a.identity.label, "b": b.identity.label, "split": b.report["model"]["split"],
            "shared_sources": sorted(shared) if src_a != src_b else [], "bootstrap_samples": n, "rows": rows,
            "not_in_data": not_in_data}


def render_comparison(result: dict) -> str:
    """Markdown: one table, B - A with its paired 95% CI; '*' where the interval excludes 0."""
    a, b = result["a"], result["b"]
    lines = [f"# {b} vs {a} on {result['split']}", "",
             (f"B = {b}, A = {a}. Paired bootstrap ({result['bootstrap_samples']} resamples of the same tweets for "
              "both models); `*`: the 95% interval excludes 0. ECE and false-positive rates are better when lower."),
             ""]
    if result["shared_sources"]:
        lines += ["Shared sources (both models trained on them): " + ", ".join(result["shared_sources"]), ""]
    rows = [[r["scope"], r["metric"], fmt(r["a"]), fmt(r["b"]),
             f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" + (" *" if r["significant"] else ""),
             r["n"]] for r in result["rows"]]
    lines.append(table(["scope", "metric", "A", "B", "B - A [95% CI]", "n (positives for policy metrics)"], rows))
    if result.get("not_in_data"):
        lines += ["", f"{NOT_IN_DATA.capitalize()}: " + "; ".join(result["not_in_data"]) + "."]
    return "\n".join(lines) + "\n"


def write_comparison(a, b, cfg, tracking_uri: str | None = None) -> Path:
    """compare(a, b) -> `comparison.json` + `comparison.md` in b's report directory (and b's evaluation run)."""
    result = compare(a, b, n=cfg.evaluation.bootstrap_samples, seed=cfg.evaluation.seed, data_root=cfg.data.root,
                     slur_swear_terms=cfg.evaluation.slur_swear_terms)
    (b.out_dir / "comparison.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    path = b.out_dir / "comparison.md"
    path.write_text(render_comparison(result), encoding="utf-8")
    if b.run_id:
        uri = resolve_uri(tracking_uri or cfg.tracking.uri)
        Run(client(uri), b.run_id, uri).log_artifact_file(path, "report")
    return path
