"""The benchmark report: the issue's targets checked against a measured run, markdown, and an MLflow run."""

from __future__ import annotations

import re
from pathlib import Path

RSS_LIMIT_MB = 1024


def _best(report: dict) -> dict:
    shipped = [r for r in report["inprocess"][1:] if r.get("shipped", True)]
    return max(shipped, key=lambda r: r["texts_per_s"])


def _default(report: dict) -> dict:
    shipped = [r for r in report["inprocess"][1:] if r.get("shipped", True)]
    return next(r for r in shipped if r["path"] == report["default_path"])


def served_ceiling(in_process_texts_per_s: float, echo_requests_per_s: float) -> float:
    """B: one-text requests/s if each cost the in-process model time plus the stock server's own time."""
    return 1.0 / (1.0 / in_process_texts_per_s + 1.0 / echo_requests_per_s)


def targets(report: dict) -> list[dict]:
    """(target, measured, met) rows; served rows only when the served part ran."""
    rows = [("in-process batch throughput >= 10x pipeline", 10.0, _best(report)["ratio_vs_pipeline"], "x", ">="),
            ("single-text in-process p50 <= 5 ms", 5.0, _default(report)["single"]["p50_ms"], "ms", "<=")]
    served = report.get("served")
    if served:
        runs = {(r["clients"], r["texts_per_request"]): r for r in served["runs"]}
        one, many = runs.get((1, 1)), next((r for r in served["runs"] if r["clients"] > 1), None)
        batch = next((r for r in served["runs"] if r["texts_per_request"] > 1), None)
        echo = {r["clients"]: r for r in served.get("echo", {}).get("runs", [])}
        in_process = _default(report)
        if many and many["clients"] in echo:
            ceiling = served_ceiling(in_process["texts_per_s"], echo[many["clients"]]["requests_per_s"])
            rows.append((f"served {many['clients']} clients >= 0.85 x B (B = 1 / (1/P + 1/E) = {ceiling:.1f})",
                         0.85, many["texts_per_s"] / ceiling, "x B", ">="))
            rows.append(("server CPU per request outside the model <= echo's (ours minus in-process model time)",
                         echo[many["clients"]]["server_cpu_ms_per_request"],
                         many["server_cpu_ms_per_request"] - 1e3 / in_process["texts_per_s"], "ms", "<="))
        if one and 1 in echo:
            limit = in_process["single"]["p50_ms"] + echo[1]["p50_ms"]
            rows.append(("p50 one tweet over HTTP <= in-process p50 + echo p50", limit, one["p50_ms"], "ms", "<="))
        if batch:
            rows.append((f"{batch['texts_per_request']}-text requests >= 0.9 x in-process", 0.9,
                         batch["texts_per_s"] / in_process["texts_per_s"], "x", ">="))
        rows += [("service RSS <= 1 GB", RSS_LIMIT_MB, served["peak_rss_mb"], "MB", "<="),
                 ("cold start <= 10 s (export cached)", 10.0, served["cold_start_s"], "s", "<=")]
    return [{"target": t, "limit": lim, "measured": m, "unit": u,
             "met": bool(m >= lim if op == ">=" else m <= lim)} for t, lim, m, u, op in rows]


def _f(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def markdown(r: dict) -> str:
    m, d, s, b = r["machine"], r["data"], r["settings"], r["bound"]
    tok, chars = d["tokens"], d["chars"]
    lines = [
        f"# Inference benchmark: {r['model']['ref']}",
        "",
        f"Machine: {m['cpu']} ({m['ghz']:.2f} GHz), {m['cores']} cores, torch CPU capability "
        f"{m['torch_capability']}, native bf16 {m['native_bf16']}; load average {m['load_avg'][0]:.2f} at start, {m['load_avg_end'][0]:.2f} at end. "
        f"Threads {s['threads']}, batch size {s['batch_size']}, {s['warmup']} warm-up texts (never timed) for "
        f"every contender.",
        "",
        f"Data: {s['n']} distinct tweets from the shared test files "
        f"({', '.join(f'{k} {v}' for k, v in d['sources'].items())}); "
        f"characters mean {_f(chars['mean'], 0)}, p95 {_f(chars['p95'], 0)}; tokens (normalized, max_length "
        f"{r['model']['max_length']}) mean {_f(tok['mean'])}, p50 {_f(tok['p50'], 0)}, p90 {_f(tok['p90'], 0)}, "
        f"p95 {_f(tok['p95'], 0)}, p99 {_f(tok['p99'], 0)}, max {_f(tok['max'], 0)}; truncated "
        f"{d['truncated_share']:.2%}. Single-text latency over the first {s['single']} of them.",
        "",
        "## In process",
        "",
        "| | texts/s | × pipeline | one text p50 / p95 ms | cold start s | process RSS MB | max \\|Δp\\| "
        "| flags flipped | batch dependence \\|Δp\\| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["inprocess"]:
        a = x.get("agreement")
        agree = (f"{a['max_abs_dp']:.2g} | {a['flip_share']:.2%} ({a['flips']}/{a['flags']}) | "
                 f"{a['batch_dependence_max_abs_dp']:.2g}") if a else "(reference) | | "
        if x["name"].startswith("pipeline"):
            agree = "n/a (uncalibrated) | | "
        cold = f"{_f(x['cold_start_s'])} | {_f(x['process_peak_rss_mb'], 0)}" if "cold_start_s" in x else " | "
        name = x["name"] + ("" if x.get("shipped", True) else " (rejected)")
        if x.get("path") == r["default_path"] and x.get("shipped", True):
            name += " **(default)**"
        lines.append(f"| {name} | {_f(x['texts_per_s'])} | {x['ratio_vs_pipeline']:.2f} | "
                     f"{_f(x['single']['p50_ms'])} / {_f(x['single']['p95_ms'])} | {cold} | {agree} |")
    if not m["native_bf16"]:
        lines += ["", "The bf16 path is not timed: this CPU has no AMX / AVX512-BF16, so bf16 matmuls are "
                  "emulated (several times slower than fp32); `auto` never picks it."]
    sv = r.get("served")
    if sv:
        lines += [
            "",
            f"## Served (`bentoml serve`, path `{sv['path']}` = {r['default_path']}, loopback HTTP `/classify`)",
            "",
            f"Process start -> ready: {_f(sv['cold_start_s'])} s with the ONNX export cached, "
            f"{_f(sv['cold_start_empty_cache_s'])} s on the very first start (export included). Peak RSS of the "
            f"server's process tree {_f(sv['peak_rss_mb'], 0)} MB "
            f"({' + '.join(_f(v, 0) for v in sv['rss_mb_at_peak'])}). Every request a distinct text; any non-2xx "
            f"or transport error is a failure.",
            "",
            "| server | clients | texts/request | requests | texts/s | × pipeline | p50 / p95 / p99 ms "
            "| requests per model call | server CPU ms / request | generator CPU (cores) | failures |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        echo_runs = [dict(x, ratio_vs_pipeline=float("nan"), requests_per_model_call=float("nan"), server="echo")
                     for x in sv.get("echo", {}).get("runs", [])]
        for x in [dict(x, server="tweetguard") for x in sv["runs"]] + echo_runs:
            lines.append(f"| {x['server']} | {x['clients']} | {x['texts_per_request']} | {x['requests']} | "
                         f"{_f(x['texts_per_s'])} | {x['ratio_vs_pipeline']:.2f} | "
                         f"{_f(x['p50_ms'])} / {_f(x['p95_ms'])} / {_f(x['p99_ms'])} | "
                         f"{x['requests_per_model_call']:.2f} | {x.get('server_cpu_ms_per_request', float('nan')):.2f} | "
                         f"{x['generator_cpu_share']:.2f} | {x['failures']} |")
        lines += ["", "echo = a stock BentoML service with no model (`benchmarks/echo_service.py`): the HTTP floor. "
                  "The load generator (`httpx.AsyncClient` workers in one event loop) runs on the same cores."]
        profiles = [("tweetguard", p) for p in sv.get("profiles", [])]
        profiles += [("echo", p) for p in sv.get("echo", {}).get("profiles", [])]
        if any(p["server"] for _, p in profiles):
            lines += ["", "### Where the server's time goes (py-spy, active samples; the same loads re-run under the "
                      "profiler)", "", "| server | clients | process | shares |", "|---|---:|---|---|"]
            for name, p in profiles:
                for who in ("server", "generator"):
                    if p[who]:
                        shares = ", ".join(f"{k} {v:.0%}" for k, v in p[who]["shares"].items() if v >= 0.01)
                        lines.append(f"| {name} | {p['clients']} | {who} | {shares} |")
    cache = r.get("cache")
    if cache:
        lines += ["", f"## Exact-repeat cache (a stream of {cache['requests']} one-text requests, repeat rate "
                  f"{cache['repeat_rate']:.0%}: {cache['distinct_texts']} distinct texts, {cache['clients']} clients)",
                  "", "| cache | texts/s | p50 / p99 ms | hit rate | failures |", "|---|---:|---:|---:|---:|"]
        for name in ("cache off", "cache on (default size)"):
            x = cache[name]
            lines.append(f"| {name} | {_f(x['texts_per_s'])} | {_f(x['p50_ms'])} / {_f(x['p99_ms'])} | "
                         f"{x['hit_rate']:.1%} | {x['failures']} |")
        lines += ["", f"Cache on / off: {cache['speedup']:.2f}× (entries: {cache['cache_size']})."]
    lines += [
        "",
        "## Machine bound",
        "",
        f"Useful work: {b['useful_gflop_per_text']:.3f} GFLOP per text (encoder matmuls at each text's own token "
        f"count). Padding adds {b['padded_tokens_share']['predictor (length batches)'] - 1:.1%} tokens in the "
        f"Predictor's length batches (one call over all texts), "
        f"{b['padded_tokens_share']['pipeline (input order)'] - 1:.1%} in the pipeline's input-order batches. "
        f"Measured fp32 matmul (2048², {s['threads']} threads): "
        f"{_f(m['matmul_fp32_gflops'])} GFLOP/s, so the fp32 ceiling is "
        f"~{_f(m['matmul_fp32_gflops'] / b['useful_gflop_per_text'], 0)} texts/s (nominal FMA peak at "
        f"{m['ghz']:.2f} GHz: {_f(m['nominal_fp32_gflops'], 0)} GFLOP/s = "
        f"~{_f(m['nominal_fp32_gflops'] / b['useful_gflop_per_text'], 0)} texts/s). ONNX Runtime's GEMMs can beat "
        "torch's 2048² matmul, so a fraction above 100% means that measurement, not the machine, was exceeded.",
        "",
        "| | useful GFLOP/s | fraction of measured matmul | fraction of nominal peak |",
        "|---|---:|---:|---:|",
    ]
    rows = [(x["name"], x["texts_per_s"]) for x in r["inprocess"]]
    rows += [(f"served, {x['clients']} client(s) × {x['texts_per_request']} text(s)", x["texts_per_s"])
             for x in (sv or {}).get("runs", [])]
    for name, rate in rows:
        gflops = rate * b["useful_gflop_per_text"]
        lines.append(f"| {name} | {_f(gflops)} | {gflops / m['matmul_fp32_gflops']:.0%} | "
                     f"{gflops / m['nominal_fp32_gflops']:.0%} |")
    lines += ["", "## Profile (where the time goes)", "",
              "| path | batch pass s: normalize / tokenize / pad / forward | one text ms: normalize / tokenize "
              "/ pad / forward | one text `predict` p50 ms |", "|---|---|---|---:|"]
    stages = ("normalize", "tokenize", "pad", "forward")
    for p in r["profile"]:
        bp, one = p["batch_pass_s"], p["one_text_ms"]
        lines.append(f"| {p['path']} | {' / '.join(f'{bp[k]:.2f}' for k in stages)} | "
                     f"{' / '.join(f'{one[k]:.2f}' for k in stages)} | {one['predict_p50_total']:.2f} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {_f(t['measured'], 2)} {t['unit']} | {'yes' if t['met'] else 'no'} |")
    lines += ["", f"Wall time of the benchmark: {_f(r['wall_s'], 0)} s.", ""]
    return "\n".join(lines)


def _flat(prefix: str, value, out: dict) -> None:
    """Numeric leaves of nested dicts as MLflow metrics named by their dotted path (MLflow's allowed chars)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[re.sub(r"[^\w\-. :/]", "_", prefix)] = float(value)


def log_mlflow(report: dict, files: list[Path]) -> str:
    """One run in experiment `tweetguard-bench` (tracking URI as training resolves it); returns its id."""
    from training.config import repo_root
    from training.tracking.runs import Run, git_commit, resolve_uri

    metrics: dict[str, float] = {}
    for x in report["inprocess"]:
        _flat(x["name"], x, metrics)
    for x in report.get("served", {}).get("runs", []):
        _flat(f"served_{x['clients']}c_{x['texts_per_request']}t", x, metrics)
    _flat("served", {k: v for k, v in report.get("served", {}).items() if k != "runs"}, metrics)
    _flat("bound", report["bound"], metrics)
    with Run.start(resolve_uri(None), "tweetguard-bench", f"bench-{Path(report['model']['dir']).name}",
                   {"git_commit": git_commit(repo_root()), "model": report["model"]["ref"]}, system_metrics=False) as run:
        run.log_params({**{f"settings.{k}": v for k, v in report["settings"].items()},
                        "model": report["model"]["ref"], "default_path": report["default_path"],
                        "cpu": report["machine"]["cpu"]})
        run.log_metrics(metrics, step=0)
        for f in files:
            run.log_artifact_file(f)
    return run.run_id
