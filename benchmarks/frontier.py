"""The fast tier's speed/quality frontier in one run: the teacher, its distilled student and the student in int8.

  .venv/bin/python -m benchmarks.frontier --teacher models:/tweetguard@champion \
      --student models:/tweetguard-fast/1 [--int8 models:/tweetguard-fast/3] [--config configs/default.yaml] \
      [--split test] [--n 2000] [--clients 16] [--out reports/frontier] [key=value ...]

1. Quality: `tweetguard evaluate`'s scoring (the serving Predictor, each model at its own card) of the same `--split`
   rows; PR-AUC / ROC-AUC per policy, student - teacher with paired-bootstrap 95% CIs (`training.evaluation.compare`,
   the behaviour suite and benchmarks included). `--int8`: the student quantized by `tweetguard quantize` (its own
   model and card), scored the same way: int8 - teacher (the same comparison) and int8 - student, paired.
2. Speed, on the same `--n` distinct test tweets for everyone: in process (the `auto` path, batch 32; the stock
   `transformers` pipeline of the teacher as the baseline), rounds interleaved, the best of `--rounds`; served
   (`bentoml serve`, shipped defaults, exact-repeat cache off): `--clients` clients x 1 text and 1 client x 32 texts.
Writes frontier.json and frontier.md to `--out`; the two evaluations' reports go under it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import measure
from benchmarks.inference import WARMUP, bench_pipeline, bench_predictor
from serving.policies import POLICIES

INT8 = "student int8"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.frontier", description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="models:/tweetguard@champion")
    ap.add_argument("--student", default="models:/tweetguard-fast@challenger")
    ap.add_argument("--int8", default=None, metavar="REF",
                    help="the student's static int8 model (tweetguard quantize)")
    ap.add_argument("--config", default="configs/default.yaml", help="data and evaluation settings")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store of the models (default: the config's)")
    ap.add_argument("--split", default="test", help="labelled split for the quality part (test: report only)")
    ap.add_argument("--n", type=int, default=2000, help="distinct test tweets for the speed part")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved in-process rounds (best kept)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--skip-served", action="store_true")
    ap.add_argument("--data-root", default=os.environ.get("TWEETGUARD_DATA_ROOT", "../shared/datasets"),
                    help="where the speed part's test tweets are read")
    ap.add_argument("--sources-file", default="data/sources.yaml")
    ap.add_argument("--out", default="reports/frontier")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for tweetguard")
    return ap.parse_args(argv)


def quality(args, cfg, uri: str, out: Path, dirs: dict[str, Path]) -> dict:
    """Every model through `evaluate` on the same rows; student - teacher compared, and the int8 model (if any)
    against the teacher (`int8_vs_teacher`, the same comparison) and the student (`int8_rows`, all rows)."""
    from training.evaluation.compare import compare, metric_rows
    from training.evaluation.evaluate import evaluate, load_split

    data = load_split(cfg, args.split)
    n, seed = cfg.evaluation.bootstrap_samples, cfg.evaluation.seed
    evals = {name: evaluate(str(d), cfg, split=args.split, out_dir=out / name.replace(" ", "-"), tracking_uri=uri,
                            data=data, log_to_mlflow=False) for name, d in dirs.items()}
    result = compare(evals["teacher"], evals["student"], n=n, seed=seed, data_root=cfg.data.root)
    if INT8 in evals:
        student, int8 = evals["student"], evals[INT8]
        result["int8_vs_teacher"] = compare(evals["teacher"], int8, n=n, seed=seed,
                                            data_root=cfg.data.root)["rows"]
        result["int8_rows"] = metric_rows("all", np.ones(len(data), dtype=bool), student.scored, int8.scored,
                                          student.report["thresholds"], int8.report["thresholds"], n, seed)
    return result


def served(model_dir: Path, texts: list[str], warmup: list[str], *, threads: int, clients: int, work: Path) -> dict:
    """`clients` x one text over the first half of `texts`, then 1 client x 32 texts over the rest."""
    from benchmarks.served import load_run, model_env
    from serving.fastpath import AUTO
    from training.release.package import SOURCE_TARGET, Served, import_into_store

    home = work / "bentoml"
    tag = import_into_store(model_dir, home)
    env = model_env(tag, threads=threads, path=AUTO, clients=clients, work=work)
    server = Served.start(SOURCE_TARGET, bentoml_home=home, log_path=work / "serve.log", env=env)
    half = len(texts) // 2
    try:
        load_run(server.url, [[t] for t in warmup], 1)
        one = load_run(server.url, [[t] for t in texts[:half]], clients, server_pid=server.proc.pid)
        rest = texts[half:]
        many = load_run(server.url, [rest[i:i + 32] for i in range(0, len(rest) - 31, 32)], 1,
                        server_pid=server.proc.pid)
    finally:
        server.stop()
    return {"one_text": one, "32_texts": many}


def run(args: argparse.Namespace) -> dict:
    import torch

    from serving.fastpath import AUTO
    from serving.predictor import Predictor, read_model_config
    from training.config import load_config
    from training.tracking.refs import resolve_model_ref
    from training.tracking.runs import resolve_uri

    started = time.time()
    cfg = load_config(args.config, args.overrides)
    uri = resolve_uri(args.tracking_uri or cfg.tracking.uri)
    out = Path(args.out)
    dirs = {"teacher": resolve_model_ref(args.teacher, tracking_uri=uri),
            "student": resolve_model_ref(args.student, tracking_uri=uri)}
    if args.int8:
        dirs[INT8] = resolve_model_ref(args.int8, tracking_uri=uri)
    cache_dir = Path(tempfile.mkdtemp(prefix="tgfrontier-"))
    torch.set_num_threads(args.threads)
    predictors = {name: Predictor.load(d, batch_size=args.batch_size, num_threads=args.threads, path=AUTO,
                                       cache_dir=cache_dir) for name, d in dirs.items()}
    report: dict = {"teacher": str(args.teacher), "student": str(args.student), "int8": args.int8,
                    "machine": measure.machine(),
                    "models": {name: {"dir": str(d), "layers": read_model_config(d).num_hidden_layers}
                               for name, d in dirs.items()},
                    "settings": {"n": args.n, "split": args.split, "threads": args.threads, "rounds": args.rounds,
                                 "batch_size": args.batch_size, "clients": args.clients, "path": AUTO}}
    report["quality"] = quality(args, cfg, uri, out, dirs)

    texts, _ = measure.shared_test_tweets(args.n + WARMUP, root=args.data_root, sources_file=args.sources_file)
    warmup, texts = texts[:WARMUP], texts[WARMUP:]
    single = texts[:100]
    speed: dict[str, dict] = {}
    for _ in range(args.rounds):  # interleaved: a slow spell of the machine hits every contender alike
        pipe = bench_pipeline(dirs["teacher"], texts, warmup, single, args, predictors["teacher"].max_length)
        rounds = [("pipeline (stock, teacher)", pipe)]
        rounds += [(name, bench_predictor(name, p, texts, warmup, single)[0]) for name, p in predictors.items()]
        for name, r in rounds:
            if name not in speed or r["texts_per_s"] > speed[name]["texts_per_s"]:
                speed[name] = r
    base = speed["pipeline (stock, teacher)"]["texts_per_s"]
    for r in speed.values():
        r["ratio_vs_pipeline"] = r["texts_per_s"] / base
        r["ratio_vs_teacher"] = r["texts_per_s"] / speed["teacher"]["texts_per_s"]
    report["inprocess"] = speed
    if not args.skip_served:
        report["served"] = {name: served(dirs[name], texts, warmup, threads=args.threads, clients=args.clients,
                                         work=cache_dir / name.replace(" ", "-")) for name in dirs}
        for r in report["served"].values():
            for x in r.values():
                x["ratio_vs_pipeline"] = x["texts_per_s"] / base
    report["machine"]["load_avg_end"] = list(os.getloadavg())
    report["wall_s"] = time.time() - started
    return report


def _ci(row: dict) -> str:
    return f"{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]" + (" *" if row["significant"] else "")


def markdown(r: dict) -> str:
    m, q = r["machine"], r["quality"]
    lines = [f"# Fast-tier frontier: {r['student']} vs {r['teacher']}", "",
             f"Machine: {m['cpu']} ({m['torch_capability']}), {m['cores']} cores, threads {r['settings']['threads']}. Speed on "
             f"{r['settings']['n']} distinct test tweets (best of {r['settings']['rounds']} interleaved rounds, path "
             f"`{r['settings']['path']}`, batch {r['settings']['batch_size']}); quality on the `{q['split']}` split, "
             f"each model at its own card, paired bootstrap ({q['bootstrap_samples']} resamples, `*`: the 95% "
             "interval excludes 0).", "",
             "## Speed", "", "| model | layers | texts/s in process | × teacher | × pipeline | one text p50 ms |",
             "|---|---:|---:|---:|---:|---:|"]
    layers = {name: x["layers"] for name, x in r["models"].items()}
    for name, x in r["inprocess"].items():
        lines.append(f"| {name} | {layers.get(name, r['models']['teacher']['layers'])} | {x['texts_per_s']:.1f} | "
                     f"{x['ratio_vs_teacher']:.2f} | {x['ratio_vs_pipeline']:.2f} | {x['single']['p50_ms']:.1f} |")
    if r.get("served"):
        lines += ["", "Served (`bentoml serve`, shipped settings, exact-repeat cache off):", "",
                  f"| model | {r['settings']['clients']} clients × 1 text: texts/s | p50 / p99 ms | 1 client × 32 "
                  "texts: texts/s | × pipeline | failures |", "|---|---:|---:|---:|---:|---:|"]
        for name, s in r["served"].items():
            one, many = s["one_text"], s["32_texts"]
            lines.append(f"| {name} | {one['texts_per_s']:.1f} | {one['p50_ms']:.1f} / {one['p99_ms']:.1f} | "
                         f"{many['texts_per_s']:.1f} | {many['ratio_vs_pipeline']:.2f} | "
                         f"{one['failures'] + many['failures']} |")
    rows = {(x["scope"], x["metric"]): x for x in q["rows"]}
    vs_teacher = {(x["scope"], x["metric"]): x for x in q.get("int8_vs_teacher", [])}
    vs_student = {x["metric"]: x for x in q.get("int8_rows", [])}
    head = "| policy | metric | teacher | student | student − teacher [95% CI] |"
    if vs_teacher:
        head += " student int8 | int8 − teacher [95% CI] | int8 − student [95% CI] |"
    lines += ["", "## Quality (all rows of the split)", "", head, "|" + "---|" * (head.count("|") - 1)]
    for p in POLICIES:
        for k in ("pr_auc", "roc_auc"):
            x = rows.get(("all", f"{p}/{k}"))
            if not x:
                continue
            line = f"| {p} | {k} | {x['a']:.3f} | {x['b']:.3f} | {_ci(x)} |"
            y, z = vs_teacher.get(("all", f"{p}/{k}")), vs_student.get(f"{p}/{k}")
            if y and z:
                line += f" {y['b']:.3f} | {_ci(y)} | {_ci(z)} |"
            lines.append(line)
    lines.append("")
    other = [x for x in q["rows"] if x["scope"] != "all" and (x["scope"].startswith(("benchmark", "behaviour all")))]
    if other:
        more = ", int8 − teacher" if vs_teacher else ""
        lines += [f"## Benchmarks and behaviour suite (student − teacher{more})", "",
                  "| scope | metric | teacher | student | Δ [95% CI] |" + (" int8 | Δ [95% CI] |" if vs_teacher else ""),
                  "|---|---|---:|---:|---|" + ("---:|---|" if vs_teacher else "")]
        for x in other:
            y = vs_teacher.get((x["scope"], x["metric"]))
            lines.append(f"| {x['scope']} | {x['metric']} | {x['a']:.3f} | {x['b']:.3f} | {_ci(x)} |"
                         + (f" {y['b']:.3f} | {_ci(y)} |" if y else (" | |" if vs_teacher else "")))
    lines += ["", f"Wall time: {r['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    report = run(args)
    measure.write_report(args.out, "frontier", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
