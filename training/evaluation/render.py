"""The evaluation report as markdown, and the small tables notebooks and the CLI print. Only formats numbers
that `training.evaluation.evaluate.compute_report` computed."""

from __future__ import annotations

from serving.artifact import TIERS, PolicyCard
from serving.policies import POLICIES
from training.evaluation.published import METRIC_NAMES, benchmark_value


def fmt(v, digits: int = 3) -> str:
    """A metric for a table: 'n/a' when missing or NaN."""
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def _ci(ci: dict, key: str) -> str:
    return f"[{ci[key][0]:.3f}, {ci[key][1]:.3f}]" if key in ci else ""


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_rows(metrics: dict, ci: dict) -> list[list]:
    rows = []
    for p in POLICIES:
        if f"{p}/n_pos" not in metrics or metrics[f"{p}/n_pos"] + metrics[f"{p}/n_neg"] == 0:
            continue
        rows.append([p, f"{int(metrics[f'{p}/n_pos'])}/{int(metrics[f'{p}/n_neg'])}"] + [
            f"{fmt(metrics.get(f'{p}/{k}'))} {_ci(ci, f'{p}/{k}')}".strip()
            for k in ("roc_auc", "pr_auc", "precision", "recall", "f1")])
    return rows


METRIC_HEADER = ["policy", "pos/neg", "ROC-AUC [95% CI]", "PR-AUC", "precision", "recall", "F1"]


def benchmark_table(benchmarks: list[dict]) -> str:
    if not benchmarks:
        return "_No benchmark test set is in this split._"
    rows = []
    for b in benchmarks:
        metric, value = benchmark_value(b)
        ours = "n/a" if value is None else f"{value:.3f} [{fmt(b['ci_low'])}, {fmt(b['ci_high'])}]"
        status = b["published_status"] + (f"; goal {b['goal']}" if b.get("goal") else "")
        rows.append([b["benchmark"], METRIC_NAMES.get(metric, metric), ours, b["n"], fmt(b["published_best"]),
                     status, b["note"]])
    return table(["benchmark", "metric", "ours [95% CI]", "n", "published best", "status", "how computed"], rows)


def bias_table(rows: list[dict], policy: str | None = None) -> str:
    selected = [r for r in rows if policy is None or r["policy"] == policy]
    return table(["policy", "slice", "pos/neg", "subgroup AUC", "BPSN AUC", "BNSP AUC", "status"],
                 [[r["policy"], r["slice"], f"{r['n_pos']}/{r['n_neg']}", fmt(r["subgroup_auc"]), fmt(r["bpsn_auc"]),
                   fmt(r["bnsp_auc"]), r["status"]] for r in selected])


def behaviour_table(report: dict) -> str:
    """Pass rate per capability (a case passes when every policy's flag matches) and flag accuracy per policy."""
    rows = [[name, c["n"], fmt(c["pass_rate"]), *[fmt(c["policies"][p]["accuracy"]) for p in POLICIES]]
            for name, c in report["capabilities"].items()]
    rows.append(["**all**", report["n"], fmt(report["pass_rate"]),
                 *[fmt(report["policies"][p]["accuracy"]) for p in POLICIES]])
    return table(["capability", "cases", "pass rate", *[f"{p} flag accuracy" for p in POLICIES]], rows)


def _behaviour_section(behaviour: dict | None) -> list[str]:
    if not behaviour:
        return []
    return ["## Behaviour suite (hand-written cases, evaluation only)", "",
            f"`{behaviour['file']}`: a case passes when every policy's flag matches its expected flag.", "",
            behaviour_table(behaviour), ""]


def card_tiers(card: PolicyCard) -> dict[str, dict[str, dict]]:
    """{policy: {tier: {"card": Tier as a dict}}} for the tiers a card has (v1 cards: none): the rows of `tier_table`,
    which `evaluate.tier_report` extends with a split's numbers and the model card renders as they are."""
    return {spec.name: {name: {"card": spec.tier(name).model_dump(mode="json")} for name in TIERS if spec.tier(name)}
            for spec in card.policies if any(spec.tier(name) for name in TIERS)}


def tier_table(tiers: dict, split: str | None = None) -> str:
    """Decision tiers (`card_tiers` / `evaluate.tier_report`): the card's target and validation numbers, and with
    `split` the precision / recall (95% CI) reached there."""
    def with_ci(entry: dict, key: str) -> str:
        if key not in entry:
            return "-"
        ci = entry.get(f"{key}_ci")
        return fmt(entry[key]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")

    head = ["policy", "tier", "target precision", "at prevalence", "threshold", "validation precision",
            "validation recall"] + ([f"{split} precision (95% CI)", f"{split} recall (95% CI)"] if split else [])
    rows = []
    for policy, by_tier in tiers.items():
        for name, entry in by_tier.items():
            c = entry["card"]
            on = c["threshold"] is not None
            rows.append([policy, name, f"{c['target_precision']:g}",
                         "validation mix" if c["prevalence"] is None else f"{c['prevalence']:g}",
                         fmt(c["threshold"]) if on else f"off ({c['note']})", fmt(c["precision"]), fmt(c["recall"]),
                         *([with_ci(entry, "precision"), with_ci(entry, "recall")] if split else [])])
    return table(head, rows)


def _clip(text: str, n: int = 140) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def _queue_section(queue: dict | None) -> list[str]:
    if not queue or not any(q["queued"] > 0 for q in queue.values() if q["rows"]):
        return []
    return ["## What the tiers act on (share of rows, whatever the labels)", "",
            table(["rows", "n", "review or remove, any policy", "remove, any policy",
                   *(f"{p} queued" for p in POLICIES)],
                  [[source, q["rows"], fmt(q["queued"]), fmt(q["remove"]), *(fmt(q[f"{p}/queued"]) for p in POLICIES)]
                   for source, q in queue.items()]), ""]


def render_markdown(report: dict) -> str:
    m = report.get("model", {})
    out = [f"# Evaluation: {m.get('model_ref', '?')} on {m.get('split', '?')}", "",
           f"Model: {m.get('model_name', '')} ({m.get('kind', '')}, {m.get('backbone', '')}); version "
           f"{m.get('model_version', '-')}, training run {m.get('model_run_id', '-')}. Rows: {report['rows']}.", "",
           "Thresholds (from the policy card): " + ", ".join(
               f"{p} {t:.3f} ({report['threshold_methods'][p]})" for p, t in report["thresholds"].items()), "",
           "## Overall (known labels only; 95% bootstrap CIs)", "",
           table(METRIC_HEADER, metrics_rows(report["overall"], report["overall_ci"])), "",
           "## Published-comparable benchmarks and goal measures", "", benchmark_table(report["benchmarks"]), "",
           "## Precision at a realistic prevalence", "",
           table(["policy", "prevalence", "recall", "FPR", "precision at prevalence", "precision on this split"],
                 [[p, f"{v['prevalence']:g}", fmt(v["recall"]), fmt(v["false_positive_rate"], 4), fmt(v["precision"]),
                   fmt(v["precision_on_split"])] for p, v in report["at_prevalence"].items()]), "",
           *(["## Decision tiers (chosen on validation; action when probability >= threshold)", "",
              tier_table(report["tiers"], report.get("model", {}).get("split", "this split")), ""]
             if report.get("tiers") else []),
           *_queue_section(report.get("queue")),
           "## Calibration (ECE, 15 bins)", "",
           table(["policy", "calibration", "ECE uncalibrated", "ECE calibrated"],
                 [[p, report["calibration_methods"][p], fmt(e["uncalibrated"], 4), fmt(e["calibrated"], 4)]
                  for p, e in report["ece"].items()]), "", "![reliability](reliability.png)", "",
           *_behaviour_section(report.get("behaviour")),
           "## Per source", ""]
    for source, metrics in report["per_source"].items():
        rows = metrics_rows(metrics, report["per_source_ci"][source])
        if rows:
            out += [f"### {source}", "", table(METRIC_HEADER, rows), ""]
    out += ["## Identity-term bias slices", "",
            f"Judged only with >= {report['min_slice_support']} positives and negatives in the slice.", "",
            "Worst judged slices (lowest of subgroup / BPSN / BNSP AUC):", "",
            bias_table(report["bias_worst"]) if report["bias_worst"] else "_No slice has enough support._", "",
            "<details><summary>All slices</summary>", "", bias_table(report["bias"]), "", "</details>", "",
            "## Worst errors", ""]
    for policy, errs in report["errors"].items():
        for kind in ("false_positives", "false_negatives"):
            if errs[kind]:
                out += [f"### {policy}: {kind.replace('_', ' ')}", "",
                        table(["score", "source", "text"],
                              [[f"{e['score']:.3f}", e["source"], _clip(e["text"])] for e in errs[kind]]), ""]
    out += ["## Figures", "", "![PR and ROC](pr_roc.png)", "", "![confusion](confusion.png)", ""]
    out += [f"![slices {p}](slices_{p}.png)" for p in POLICIES]
    return "\n".join(out) + "\n"


def comparison_table(a: dict, b: dict, label_a: str = "A", label_b: str = "B") -> str:
    """Two reports of the same split side by side: per-policy metrics, benchmarks and ECE, with B - A."""
    rows = []
    for p in POLICIES:
        for k in ("roc_auc", "pr_auc", "precision", "recall", "f1"):
            key = f"{p}/{k}"
            if key in a["overall"] and key in b["overall"]:
                va, vb = a["overall"][key], b["overall"][key]
                rows.append([key, fmt(va), fmt(vb), f"{vb - va:+.3f}"])
        ea, eb = a["ece"][p]["calibrated"], b["ece"][p]["calibrated"]
        if ea == ea and eb == eb:
            rows.append([f"{p}/ece", fmt(ea, 4), fmt(eb, 4), f"{eb - ea:+.4f}"])
    bench_b = {x["benchmark"]: x for x in b["benchmarks"]}
    for x in a["benchmarks"]:
        if x["benchmark"] in bench_b:
            metric, va = benchmark_value(x)
            vb = benchmark_value(bench_b[x["benchmark"]])[1]
            name = f"{x['benchmark']} {METRIC_NAMES.get(metric, metric)}"
            rows.append([name, fmt(va), fmt(vb), "n/a" if va is None or vb is None else f"{vb - va:+.3f}"])
    return table(["metric", label_a, label_b, f"{label_b} - {label_a}"], rows)
