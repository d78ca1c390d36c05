"""Inference benchmark: one command, one machine, one run, the same real test tweets for every contender.

  .venv/bin/python -m benchmarks.inference --model DIR_OR_MODELS_URI [--n 2000] [--skip-served] \
      [--candidates] [--out reports/bench] [--mlflow]

Measured over `--n` distinct tweets from the shared test files (OLID, SOLID, TweetEval hate), with the same torch
threads and the same warm-up texts (not among the measured ones) for everyone:
 1. the stock baseline: `transformers.pipeline("text-classification", top_k=None, function_to_apply="sigmoid")`,
    batch_size 32, `trust_remote_code=True` (a mean-head artifact's model class is the code saved beside its
    weights); its scores are uncalibrated, so only its speed is compared;
 2. the Predictor's reference path and 3. every other path in `serving.fastpath.PATHS` (bf16 only on CPUs with
    native bf16), batch_size 32, plus the rejected candidates with `--candidates`;
 4. the served endpoint (`bentoml serve`, `auto` path) over loopback HTTP: 1 client and `--clients` clients;
 5. with `--cache-repeat-rate R`, the exact-repeat cache: a stream where a share R of requests repeat an earlier
    text, served with the cache off and on (apart from every other number, which is on distinct texts).
Reported: texts/s and ratios against (1), single-text latency, cold start and peak RSS, agreement with the
reference (max |Δp|, flags flipped at the card's thresholds, batch dependence), a per-stage profile and the
machine bound (FLOPs per text vs measured fp32 matmul GFLOP/s). Writes bench.json + bench.md to `--out`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import measure
from benchmarks.report import log_mlflow, markdown, targets
from training.config import repo_root

WARMUP = 64  # texts scored before timing, never timed themselves

COLD = {  # process start -> first prediction, in a fresh interpreter; then it prints its peak RSS (VmHWM, kB)
    "pipeline": "from transformers import pipeline; p = pipeline('text-classification', model=sys.argv[1], "
                "top_k=None, function_to_apply='sigmoid', trust_remote_code=True); p(['warm up'])",
    "predictor": "from serving.predictor import Predictor; p = Predictor.load(sys.argv[1], path=sys.argv[2], "
                 "num_threads=int(sys.argv[3]), cache_dir=sys.argv[4]); p.predict(['warm up'])",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="artifact dir, runs:/<id>/model or models:/tweetguard@alias")
    ap.add_argument("--n", type=int, default=2000, help="distinct test tweets measured (>= 2000 for a report)")
    ap.add_argument("--single", type=int, default=200, help="texts timed one at a time (latency)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch / ONNX Runtime intra-op threads")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients of the served run")
    ap.add_argument("--skip-served", action="store_true", help="no bentoml serve part")
    ap.add_argument("--skip-cold-start", action="store_true", help="no fresh-process cold starts in process")
    ap.add_argument("--candidates", action="store_true", help="also time the rejected int8 candidates")
    ap.add_argument("--cache-repeat-rate", type=float, default=0.0, help="also serve a 1,000-request stream with "
                    "this share of exact repeats, exact-repeat cache off vs on (0 = skip; never a headline number)")
    ap.add_argument("--data-root", default=os.environ.get("TWEETGUARD_DATA_ROOT", "../shared/datasets"))
    ap.add_argument("--sources-file", default="data/sources.yaml")
    ap.add_argument("--seed", type=int, default=0, help="which tweets are drawn")
    ap.add_argument("--out", default="reports/bench", help="directory for bench.json and bench.md")
    ap.add_argument("--mlflow", action="store_true", help="log the report as a run (experiment tweetguard-bench)")
    return ap.parse_args(argv)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def cold_start(kind: str, model_dir: Path, path: str, threads: int, cache_dir: Path) -> dict:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent across exec.
    code = (f"import sys; {COLD[kind]}; "
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-c", code, str(model_dir), path, str(threads), str(cache_dir)]
    seconds, out = timed(subprocess.run, argv, cwd=repo_root(), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cold start of {kind}/{path} failed:\n{out.stderr[-3000:]}")
    return {"cold_start_s": seconds, "process_peak_rss_mb": int(out.stdout.split()[-1]) / 1024}


def bench_pipeline(model_dir: Path, texts, warmup, single, args, max_length: int) -> dict:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(model_dir), top_k=None, function_to_apply="sigmoid",
                    trust_remote_code=True)  # a mean-head artifact's class is its own saved code
    kwargs = dict(batch_size=args.batch_size, truncation=True, max_length=max_length)
    score = lambda xs: list(pipe(xs, **kwargs))  # noqa: E731
    score(warmup)
    measure.latencies_ms(score, warmup[:10])
    seconds, _ = timed(score, texts)
    return {"name": "pipeline (stock)", "texts_per_s": len(texts) / seconds,
            "single": measure.quantiles(measure.latencies_ms(score, single))}


def bench_predictor(name: str, predictor, texts, warmup, single) -> tuple[dict, np.ndarray]:
    predictor.predict(warmup)
    measure.latencies_ms(predictor.predict, warmup[:10])
    seconds, rows = timed(predictor.predict, texts)
    probs = np.array([[r["scores"][p] for p in predictor.policies] for r in rows])
    return ({"name": name, "path": predictor.path, "texts_per_s": len(texts) / seconds,
             "single": measure.quantiles(measure.latencies_ms(predictor.predict, single))}, probs)


def profile(predictor, texts, single) -> dict:
    """Where the time of a batch pass and of one-text calls goes, stage by stage (seconds / ms per text)."""
    import torch

    from serving.preprocess import normalize_tweet

    def stages(batch: list[str]) -> np.ndarray:
        t = [time.perf_counter()]
        norm = [normalize_tweet(x) for x in batch]
        t.append(time.perf_counter())
        features, _ = predictor._encode(norm)
        t.append(time.perf_counter())
        order = sorted(range(len(batch)), key=lambda i: -len(features[i]["input_ids"]))
        padded = [predictor.tokenizer.pad([features[i] for i in order[s:s + predictor.batch_size]],
                                          padding="longest", return_tensors="pt")
                  for s in range(0, len(batch), predictor.batch_size)]
        t.append(time.perf_counter())
        with torch.inference_mode():
            for b in padded:
                predictor._forward(b)
        t.append(time.perf_counter())
        return np.diff(t)

    names = ["normalize", "tokenize", "pad", "forward"]
    one = np.mean([stages([x]) for x in single], axis=0) * 1e3
    total_one = np.median(measure.latencies_ms(predictor.predict, single))
    return {"path": predictor.path, "batch_pass_s": dict(zip(names, stages(texts).tolist())),
            "one_text_ms": dict(zip(names, one.tolist())) | {"predict_p50_total": float(total_one)}}


def run(args: argparse.Namespace) -> dict:
    import tempfile

    import torch

    from serving.fastpath import AUTO, PATHS, native_bf16, resolve_path
    from serving.predictor import Predictor, length_batches, read_model_config
    from training.tracking.refs import resolve_model_ref

    started = time.time()
    model_dir = resolve_model_ref(args.model)
    config = read_model_config(model_dir)
    cache_dir = Path(tempfile.mkdtemp(prefix="tgbench-cache-"))
    texts, by_source = measure.shared_test_tweets(args.n + WARMUP, root=args.data_root,
                                                  sources_file=args.sources_file, seed=args.seed)
    warmup, texts = texts[:WARMUP], texts[WARMUP:]
    single = texts[: args.single]
    torch.set_num_threads(args.threads)
    report: dict = {"model": {"ref": str(args.model), "dir": str(model_dir), "hidden": config.hidden_size,
                              "layers": config.num_hidden_layers, "ffn": config.intermediate_size},
                    "machine": measure.machine(), "settings": {"n": len(texts), "single": len(single),
                    "warmup": WARMUP, "batch_size": args.batch_size, "threads": args.threads}}
    report["machine"]["matmul_fp32_gflops"] = measure.matmul_gflops(args.threads)

    reference = Predictor.load(model_dir, batch_size=args.batch_size, num_threads=args.threads, path="reference")
    lengths, truncated = measure.token_lengths(reference, texts)
    report["model"]["max_length"] = reference.max_length
    report["data"] = {"sources": by_source, "chars": measure.distribution([len(t) for t in texts]),
                      "tokens": measure.distribution(lengths), "truncated_share": float(truncated.mean())}
    flops = measure.flops_per_text(config, lengths)
    batches = {"predictor (length batches)": length_batches(lengths.tolist(), args.batch_size),
               "pipeline (input order)": [list(range(i, min(i + args.batch_size, len(texts))))
                                          for i in range(0, len(texts), args.batch_size)]}
    padded = {name: measure.padded_tokens(lengths, b) / lengths.sum() for name, b in batches.items()}
    report["bound"] = {"useful_gflop_per_text": float(flops.mean() / 1e9), "padded_tokens_share": padded}

    results = [bench_pipeline(model_dir, texts, warmup, single, args, reference.max_length)]
    thresholds = [reference.card.thresholds[p] for p in reference.policies]
    ref_result, ref_probs = bench_predictor("predictor reference", reference, texts, warmup, single)
    results.append(ref_result)
    paths = [p for p in PATHS if p != "reference" and (p != "bf16" or native_bf16())]
    predictors = {p: Predictor.load(model_dir, batch_size=args.batch_size, num_threads=args.threads, path=p,
                                    cache_dir=cache_dir) for p in paths}
    if args.candidates:
        from benchmarks.candidates import candidate_predictors

        predictors |= candidate_predictors(reference, threads=args.threads, cache_dir=cache_dir)
    for name, predictor in predictors.items():
        result, probs = bench_predictor(f"predictor {name}", predictor, texts, warmup, single)
        result["agreement"] = measure.agreement(ref_probs, probs, thresholds)
        result["agreement"]["batch_dependence_max_abs_dp"] = measure.batch_dependence(predictor, texts[:64])
        result["shipped"] = name in PATHS
        results.append(result)
    for result in results if not args.skip_cold_start else []:
        if result.get("shipped", True):
            kind = "predictor" if "path" in result else "pipeline"
            result |= cold_start(kind, model_dir, result.get("path", ""), args.threads, cache_dir)
    base = results[0]["texts_per_s"]
    for result in results:
        result["ratio_vs_pipeline"] = result["texts_per_s"] / base
        result["achieved_gflops"] = result["texts_per_s"] * report["bound"]["useful_gflop_per_text"]
        result["fraction_of_matmul_peak"] = result["achieved_gflops"] / report["machine"]["matmul_fp32_gflops"]
    report["inprocess"] = results
    default = resolve_path(AUTO)
    report["default_path"] = default
    report["profile"] = [profile(reference, texts, single[:50])]
    if default != "reference":
        report["profile"].append(profile(predictors[default], texts, single[:50]))
    if not args.skip_served:
        from benchmarks.served import bench_served

        served = bench_served(model_dir, texts, warmup, threads=args.threads, path=AUTO, clients=args.clients)
        for r in served["runs"]:
            r["ratio_vs_pipeline"] = r["texts_per_s"] / base
            r["fraction_of_matmul_peak"] = (r["texts_per_s"] * report["bound"]["useful_gflop_per_text"]
                                            / report["machine"]["matmul_fp32_gflops"])
        report["served"] = served
        if args.cache_repeat_rate:
            from benchmarks.served import bench_cache

            report["cache"] = bench_cache(model_dir, texts, warmup, threads=args.threads, path=AUTO,
                                          clients=args.clients, repeat_rate=args.cache_repeat_rate)
    report["machine"]["load_avg_end"] = list(os.getloadavg())
    report["wall_s"] = time.time() - started
    report["targets"] = targets(report)
    return report


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    report = run(args)
    out = measure.write_report(args.out, "bench", report, markdown(report))
    if args.mlflow:
        log_mlflow(report, [out / "bench.json", out / "bench.md"])
    return report


if __name__ == "__main__":
    main()
