"""Reasons, checked (issue 36): how faithful each method's words are, and what `"explain": true` costs served.

  .venv/bin/python -m benchmarks.reasons --model DIR [--config configs/default.yaml] [--n 150] [--out DIR]
  .venv/bin/python -m benchmarks.reasons speed --model DIR [--tweets 100] [--seconds 60] [--repeats 3] [--out DIR]

ERASER's comprehensiveness and sufficiency at k = 3 words and k = 20% (training.evaluation.faithfulness) of
occlusion (served) and integrated gradients (offline) against random words and a lexicon of the policy's train
positives, on `--n` validation positives per policy (a seeded sample); occlusion − lexicon with a paired bootstrap
95% CI; and the model-randomisation check (Spearman of occlusion contributions after re-initialising the top two
layers and the head). Prints a markdown table with the machine; writes faithfulness.json to `--out`.

`speed`: a real `bentoml serve` of the model (exact-repeat cache off). (1) One client, one tweet per request:
p50 of an explained request against a plain request carrying the same texts the occlusion batch scores (the
tweet and its one-word-deleted copies). (2) Plain one-tweet requests' capacity (16 clients), then an open-loop
offered load at half of it for `--seconds`, with no request explained and with 10% explained, alternating
`--repeats` times (a p99 of one minute rests on ~30 requests): plain requests' p99 over each arm's pooled repeats,
and per repeat. Ratios only within this run; writes speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import machine
from serving.policies import POLICIES
from serving.predictor import Predictor
from training.config import load_config
from training.evaluation.evaluate import load_split
from training.evaluation.faithfulness import RANKINGS, faithfulness, lexicon, model_randomisation


def open_loop(url: str, texts: list[str], *, rate: float, seconds: float, explain_share: float,
              seed: int = 0) -> dict:
    """Requests at a fixed offered rate (open loop: each leaves on its schedule, whatever the answers), one tweet
    each, a seeded `explain_share` of them explained; latency quantiles of the plain and the explained ones."""
    import asyncio
    import random

    import httpx

    rng = random.Random(seed)
    n = int(rate * seconds)
    plan = [(texts[i % len(texts)], rng.random() < explain_share) for i in range(n)]
    latencies: dict[bool, list[float]] = {False: [], True: []}
    failures = {False: 0, True: 0}  # non-200 or transport errors, plain / explained

    async def one(client, text, explain, at, t0):
        await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
        start = time.perf_counter()
        try:
            r = await client.post("/classify", json={"text": text, "explain": explain})
            if r.status_code != 200:
                failures[explain] += 1
                return
        except httpx.HTTPError:
            failures[explain] += 1
            return
        latencies[explain].append((time.perf_counter() - start) * 1e3)

    async def run():
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            t0 = time.perf_counter()
            await asyncio.gather(*(one(client, t, e, i / rate, t0) for i, (t, e) in enumerate(plan)))

    asyncio.run(run())
    return summarize(rate, seconds, explain_share, latencies, failures)


def summarize(rate: float, seconds: float, explain_share: float, latencies: dict[bool, list[float]],
              failures: dict[bool, int]) -> dict:
    from benchmarks.measure import quantiles

    return {"rate": rate, "seconds": seconds, "explain_share": explain_share,
            "plain": {"n": len(latencies[False]), "failures": failures[False], **quantiles(latencies[False])},
            "explained": {"n": len(latencies[True]), "failures": failures[True], **quantiles(latencies[True])},
            "latencies_ms": latencies, "failure_counts": failures}


def pooled(runs: list[dict]) -> dict:
    """One open-loop arm's repeats as one: latencies and failures pooled, quantiles over the pool."""
    lat = {e: [x for r in runs for x in r["latencies_ms"][e]] for e in (False, True)}
    fail = {e: sum(r["failure_counts"][e] for r in runs) for e in (False, True)}
    out = summarize(runs[0]["rate"], sum(r["seconds"] for r in runs), runs[0]["explain_share"], lat, fail)
    out["repeat_plain_p99_ms"] = [r["plain"]["p99_ms"] for r in runs]
    return out


def speed(args: argparse.Namespace) -> dict:
    import tempfile

    import httpx

    from benchmarks import measure
    from benchmarks.served import load_run, model_env
    from serving.reasons import occlusion_plan
    from training.release.package import SOURCE_TARGET, Served, import_into_store
    from training.tracking.refs import resolve_model_ref

    model_dir = resolve_model_ref(args.model)
    pool, _ = measure.shared_test_tweets(args.tweets + 2000, root=args.data_root, sources_file=args.sources_file)
    tweets, rest = pool[:args.tweets], pool[args.tweets:]
    predictor = Predictor.load(model_dir)
    batches = [occlusion_plan(t, predictor.tokenizer, predictor.max_length)[2] for t in tweets]
    work = Path(tempfile.mkdtemp(prefix="tgreasons-"))
    tag = import_into_store(model_dir, work / "bentoml")
    env = {**model_env(tag, threads=args.threads, path="auto", clients=16, work=work),
           "TWEETGUARD_MAX_INFLIGHT": "512", "TWEETGUARD_EXPLAIN_MAX_WORDS": "1000"}
    server = Served.start(SOURCE_TARGET, bentoml_home=work / "bentoml", log_path=work / "serve.log", env=env)
    report: dict = {"model": str(args.model), "machine": machine(), "tweets": len(tweets),
                    "mean_texts_per_occlusion_batch": float(np.mean([len(b) for b in batches]))}
    try:
        load_run(server.url, [[t] for t in rest[:50]], 1)  # warm-up
        explained, plain = [], []
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for tweet, batch in zip(tweets, batches):  # alternate, so drift in the machine hits both alike
                t0 = time.perf_counter()
                assert client.post("/classify", json={"text": tweet, "explain": True}).status_code == 200
                explained.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                assert client.post("/classify", json={"texts": batch}).status_code == 200
                plain.append((time.perf_counter() - t0) * 1e3)
        report["one_client"] = {"explained_p50_ms": float(np.median(explained)),
                                "plain_same_texts_p50_ms": float(np.median(plain)),
                                "ratio": float(np.median(explained) / np.median(plain))}
        capacity = load_run(server.url, [[t] for t in rest[50:50 + args.capacity_requests]], 16)
        report["capacity_requests_per_s"] = capacity["requests_per_s"]
        rate = capacity["requests_per_s"] / 2
        arms: dict[str, list[dict]] = {"none_explained": [], "ten_percent_explained": []}
        for rep in range(args.repeats):  # alternate the arms, so drift in the machine hits both alike
            arms["none_explained"].append(open_loop(server.url, rest, rate=rate, seconds=args.seconds,
                                                    explain_share=0.0, seed=2 * rep))
            arms["ten_percent_explained"].append(open_loop(server.url, rest, rate=rate, seconds=args.seconds,
                                                           explain_share=0.1, seed=2 * rep + 1))
        for arm, runs in arms.items():
            report[arm] = {k: v for k, v in pooled(runs).items() if k not in ("latencies_ms", "failure_counts")}
        report["plain_p99_ratio"] = (report["ten_percent_explained"]["plain"]["p99_ms"]
                                     / report["none_explained"]["plain"]["p99_ms"])
        report["repeat_plain_p99_ratios"] = [
            t / n for t, n in zip(report["ten_percent_explained"]["repeat_plain_p99_ms"],
                                  report["none_explained"]["repeat_plain_p99_ms"])]
        report["machine_after"] = machine()  # load average at the end: another process on the cores shows here
    finally:
        server.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    m, one = report["machine"], report["one_client"]
    print(f"model {args.model}; {m['cpu']}, {m['cores']} cores ({m['torch_capability']}); {len(tweets)} tweets, "
          f"{report['mean_texts_per_occlusion_batch']:.1f} texts per occlusion batch on average")
    print(f"1 client: explained p50 {one['explained_p50_ms']:.1f} ms, plain request with the same texts "
          f"{one['plain_same_texts_p50_ms']:.1f} ms: ratio {one['ratio']:.2f} (goal <= 1.3)")
    print(f"open loop at {rate:.1f} req/s (half of {report['capacity_requests_per_s']:.1f}): plain p99 "
          f"{report['none_explained']['plain']['p99_ms']:.0f} ms with none explained, "
          f"{report['ten_percent_explained']['plain']['p99_ms']:.0f} ms with 10% explained: ratio "
          f"{report['plain_p99_ratio']:.2f} (goal <= 1.5); explained: {report['ten_percent_explained']['explained']['n']}"
          f" answered (p50 {report['ten_percent_explained']['explained']['p50_ms']:.0f} ms), "
          f"{report['ten_percent_explained']['explained']['failures']} refused or failed; plain failures "
          f"{report['none_explained']['plain']['failures']} / {report['ten_percent_explained']['plain']['failures']}")
    print(f"{args.repeats} alternating repeats of {args.seconds:.0f} s per arm, pooled; per-repeat ratios "
          + ", ".join(f"{r:.2f}" for r in report["repeat_plain_p99_ratios"])
          + f"; load average before {m['load_avg'][0]:.2f}, after {report['machine_after']['load_avg'][0]:.2f}")
    return report


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["speed"]:
        sp = argparse.ArgumentParser(prog="python -m benchmarks.reasons speed")
        sp.add_argument("--model", required=True)
        sp.add_argument("--tweets", type=int, default=100)
        sp.add_argument("--capacity-requests", type=int, default=600)
        sp.add_argument("--seconds", type=float, default=60.0, help="per repeat and arm")
        sp.add_argument("--repeats", type=int, default=3, help="alternating repeats of the two open-loop arms")
        sp.add_argument("--threads", type=int, default=os.cpu_count() or 2)
        sp.add_argument("--data-root", default=os.environ.get("TWEETGUARD_DATA_ROOT", "../shared/datasets"))
        sp.add_argument("--sources-file", default="data/sources.yaml")
        sp.add_argument("--out", default="reports/reasons")
        speed(sp.parse_args(argv[1:]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reasons")
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reports/faithfulness")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    predictor = Predictor.load(args.model)
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    train_labels, val_labels = np.asarray(train["labels"]), np.asarray(val["labels"])
    rng = np.random.default_rng(args.seed)
    report = {"model": str(args.model), "machine": machine(), "n_per_policy": args.n, "policies": {}}
    t0 = time.monotonic()
    for j, policy in enumerate(POLICIES):
        pos = np.flatnonzero(val_labels[:, j] == 1)
        texts = [val["text"][int(i)] for i in rng.choice(pos, min(args.n, len(pos)), replace=False)]
        counts = lexicon([train["text"][int(i)] for i in np.flatnonzero(train_labels[:, j] == 1)])
        report["policies"][policy] = faithfulness(predictor, texts, policy, counts, seed=args.seed).summary()
    report["randomisation_spearman"] = model_randomisation(
        predictor, [val["text"][int(i)] for i in rng.choice(len(val), 100, replace=False)])
    report["seconds"] = time.monotonic() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faithfulness.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    m = report["machine"]
    print(f"model {args.model}; {m['cpu']}, {m['cores']} cores ({m['torch_capability']}); {args.n} validation "
          f"positives per policy; {report['seconds']:.0f} s\n")
    print("| policy | measure | occlusion | integrated gradients | random | lexicon | occlusion − lexicon [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    for policy, s in report["policies"].items():
        for m in s["means"]["occlusion"]:
            d = s["occlusion_minus_lexicon"][m]
            print(f"| {policy} | {m} | " + " | ".join(f"{s['means'][r][m]:.3f}" for r in RANKINGS)
                  + f" | {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] |")
    print(f"\nmodel randomisation (top 2 layers + head re-initialised), Spearman of occlusion contributions: "
          + ", ".join(f"{p} {v:.3f}" for p, v in report["randomisation_spearman"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
