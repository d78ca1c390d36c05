"""Arguments and entrypoints of `tweetguard evaluate` and `tweetguard promote` (training.cli registers them).

Thin: parse -> resolve config -> call `training.evaluate.evaluate` / `training.promote.promote`.
"""

from __future__ import annotations

import argparse
import sys

from training.config import load_config

REF_HELP = "artifact dir, runs:/<run_id>/model, models:/<name>@<alias> or models:/<name>/<version>"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML config (data, tracking, evaluation sections)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: config, then env)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. evaluation.bootstrap_samples=200")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="REF", help=REF_HELP)
    p.add_argument("--split", default=None, help="split to score (default: evaluation.split, i.e. test)")
    p.add_argument("--out", default=None, help="report directory (default: <evaluation.output_dir>/<model>-<split>)")
    p.add_argument("--no-mlflow", action="store_true", help="write the report only, log no evaluation run")
    _common(p)


def add_promote_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidate", metavar="REF", help="models:/<name>/<version> or models:/<name>@<alias>")
    p.add_argument("--force", action="store_true", help="promote even if the gate refuses (needs --reason)")
    p.add_argument("--reason", default=None, help="why (recorded on the version); required with --force")
    p.add_argument("--rollback", action="store_true", help="put @champion back on the previous champion")
    p.add_argument("--strict", action="store_true", help="exit 1 when the promotion is refused (automation)")
    p.add_argument("--no-test", action="store_true", help="skip the test metrics printed beside (faster)")
    p.add_argument("--name", default=None, help="registered model for --rollback (default: tracking.registered_model)")
    _common(p)


def run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate
    from training.report import benchmark_table

    cfg = load_config(args.config, args.overrides)
    result = evaluate(args.model, cfg, split=args.split, out_dir=args.out, tracking_uri=args.tracking_uri,
                      log_to_mlflow=not args.no_mlflow)
    r = result.report
    print(f"evaluated {result.identity.label} ({result.kind}) on {r['model']['split']}: {r['rows']} rows")
    print("mean PR-AUC {:.4f}, mean ROC-AUC {:.4f}".format(r["overall"]["mean_pr_auc"], r["overall"]["mean_roc_auc"]))
    print(benchmark_table(r["benchmarks"]))
    print(f"report: {result.out_dir}/report.md" + (f" | MLflow evaluation run {result.run_id}" if result.run_id else ""))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from training.evaluate import load_split
    from training.promote import describe, promote, rollback
    from training.tracking import check_reachable, resolve_uri

    cfg = load_config(args.config, args.overrides)
    uri = resolve_uri(args.tracking_uri or cfg.tracking.uri)
    check_reachable(uri)
    if args.rollback:
        decision = rollback(args.name or cfg.tracking.registered_model, tracking_uri=uri, reason=args.reason)
        print(describe(decision), end="")
        return 0
    if not args.candidate:
        print("tweetguard promote: --candidate REF is required (or --rollback)", file=sys.stderr)
        return 2
    validation = load_split(cfg, "validation")
    test = None if args.no_test else load_split(cfg, "test")
    decision = promote(args.candidate, cfg, validation=validation, test=test, tracking_uri=uri, force=args.force,
                       reason=args.reason)
    print(describe(decision), end="")
    return 1 if args.strict and decision.outcome == "refused" else 0
