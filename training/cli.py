"""`tweetguard` console script: parse, validate, then call one function. Nothing heavy at import time.

Subcommand names and flags are part of the product: keep them stable.
"""

from __future__ import annotations

import argparse
import os
import sys

from training.config import ConfigError, load_config
from training.eval_commands import (  # light: argparse + config only
    add_evaluate_arguments, add_promote_arguments, run_evaluate, run_promote)

# Nothing here should ever reach a model hub or a dataset hub unless the user opts in explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML config file (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.lr=3e-5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tweetguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="show the resolved config")
    p.add_argument("action", choices=["show"])
    _add_config_args(p)

    p = sub.add_parser("data", help="prepare the unified dataset and print the data report")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if a cached copy exists")

    p = sub.add_parser("package", help="import a model into the BentoML store and build its bento")
    p.add_argument("--model", required=True, metavar="REF",
                   help="artifact dir, runs:/<run>/<path> or models:/tweetguard@champion")
    p.add_argument("--bentoml-home", default=None, help="BentoML store dir (default: $BENTOML_HOME or ~/bentoml)")

    p = sub.add_parser("serve", help="serve a built bento (bentoml serve), on loopback unless --host is given")
    p.add_argument("--bento", default="tweetguard:latest", help="bento tag (default: the latest built)")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 exposes the service")

    p = sub.add_parser("predict", help="score a .csv/.tsv/.jsonl file: adds <policy>_probability/_flagged columns")
    p.add_argument("--model", required=True, metavar="REF",
                   help="artifact dir, runs:/<run_id>/model, models:/<name>@<alias> or models:/<name>/<version>")
    p.add_argument("--input", required=True, help="input file (.csv, .tsv or .jsonl)")
    p.add_argument("--output", required=True, help="output file (.csv, .tsv or .jsonl)")
    p.add_argument("--text-column", default="text", help="column/field holding the text (default: text)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="write rows without usable text with empty scores (default: fail listing them)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI for runs:/ and models:/ refs (default: $MLFLOW_TRACKING_URI)")

    from training.train import add_arguments as add_train_arguments  # light: stdlib + config only

    p = sub.add_parser("train", help="fine-tune the model, log the MLflow run, register the artifact")
    add_train_arguments(p)

    add_evaluate_arguments(sub.add_parser("evaluate", help="score a model on a split: metrics, benchmarks, "
                                          "calibration, bias slices, errors -> report dir + MLflow run"))
    add_promote_arguments(sub.add_parser("promote", help="move @champion to a candidate version if it does "
                                         "not regress on validation (or --rollback)"))
    return parser


def _cmd_package(args: argparse.Namespace) -> int:
    from training.package import PackageError, package
    from training.registry import resolve_model_ref

    model_dir = resolve_model_ref(args.model)
    try:
        tag = package(model_dir, bentoml_home=args.bentoml_home, ref=args.model)
    except PackageError as e:
        print(f"tweetguard package: {e}", file=sys.stderr)
        return 1
    print(f"bento: {tag}\nserve it: tweetguard serve --bento {tag}   (same as: bentoml serve {tag})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from training.package import serve_command

    cmd = serve_command(args.bento, host=args.host, port=args.port)
    print("+ " + " ".join(cmd[2:]), file=sys.stderr, flush=True)
    # Become the server (exec, not a child): a stop signal then reaches bentoml itself, not just a wrapper.
    os.execv(cmd[0], cmd)
    return 0  # not reached


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from training.data import prepare

    cfg = load_config(args.config, args.overrides)
    prepared = prepare(cfg.data, force=args.force, progress=True)
    print(prepared.card.markdown)
    print(f"dataset: {prepared.path}\ndata card: {prepared.card_md_path} (+ .json)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from training.predict import check_input, describe_bad_rows, score_job
    from training.registry import resolve_model_ref

    # The input is checked before torch is imported and the model fetched: its mistakes fail in a second.
    job = check_input(args.input, args.output, text_column=args.text_column, skip_bad_rows=args.skip_bad_rows)
    from transformers.utils import logging as hf_logging

    from serving.predictor import Predictor

    hf_logging.disable_progress_bar()  # keep stderr to our own progress bar and messages
    model_dir = resolve_model_ref(args.model, tracking_uri=args.tracking_uri)
    predictor = Predictor.load(model_dir, batch_size=args.batch_size)
    print(f"model: {args.model} -> {model_dir}", file=sys.stderr)
    summary = score_job(predictor, job)
    if summary.bad_rows:
        print(f"skipped {len(summary.bad_rows)} bad rows (empty scores):\n"
              f"{describe_bad_rows(summary.bad_rows, job.input_path)}", file=sys.stderr)
    print(f"wrote {summary.rows} rows to {summary.output}: {summary.scored} scored, "
          f"{len(summary.bad_rows)} skipped, {summary.truncated} truncated", file=sys.stderr)
    return 0



def _cmd_train(args: argparse.Namespace) -> int:
    from training.tracking import TrackingError
    from training.train import run_command

    try:
        return run_command(args)
    except TrackingError as e:
        print(f"tweetguard train: {e}", file=sys.stderr)
        return 2


COMMANDS = {
    "config": _cmd_config,
    "data": _cmd_data,
    "package": _cmd_package,
    "serve": _cmd_serve,
    "predict": _cmd_predict,
    "train": _cmd_train,
    "evaluate": run_evaluate,
    "promote": run_promote,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"tweetguard {args.command}: config error:\n{e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"tweetguard {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
