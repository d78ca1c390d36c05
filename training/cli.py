"""`tweetguard` console script, the one entry point: parse, validate, then call one function per subcommand.
Nothing heavy at import time: each command imports its stage when it runs.

The subcommands follow `make run`: data -> train -> evaluate -> promote -> package (-> serve), plus predict,
config, tune (a hyper-parameter search around train), distill (a fast tier: a smaller student of a registered
model, trained like train), quantize (static int8 of a model, calibrated as its own model) and monitor (drift
of what is served). Their names and flags are part of the product: keep them stable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from training.config import ConfigError, load_config
from training.tracking.refs import REF_FORMS
from training.tracking.runs import TrackingError

# Nothing here should ever reach a model hub or a dataset hub unless the user opts in explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _add_config_args(p: argparse.ArgumentParser, help: str = "YAML config file (default: built-in defaults)",
                     example: str = "train.lr=3e-5") -> None:
    p.add_argument("--config", "-c", default=None, help=help)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help=f"config overrides, e.g. {example}")


def _add_model_arg(p: argparse.ArgumentParser, flag: str = "--model", required: bool = True) -> None:
    p.add_argument(flag, required=required, metavar="REF", help=REF_FORMS)


def _add_tracking_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--tracking-uri", default=None, help=f"MLflow tracking URI (default: {default})")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue the run in train.output_dir/run_name (newest run if no run_name) from its "
                        "last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs stay)")
    _add_config_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tweetguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="show the resolved config")
    p.add_argument("action", choices=["show"])
    _add_config_args(p)

    p = sub.add_parser("data", help="prepare the unified dataset and print the data report")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if a cached copy exists")

    add_train_arguments(sub.add_parser("train", help="fine-tune the model, log the MLflow run, register the artifact"))

    p = sub.add_parser("distill", help="distill a teacher into a student with fewer layers (a fast tier), trained "
                                       "like train, registered as distill.registered_model (never @champion)")
    _add_model_arg(p, "--teacher", required=False)
    add_train_arguments(p)

    p = sub.add_parser("quantize", help="static int8 of a model (ONNX Runtime, calibrated on train texts): a new "
                                        "model, calibrated on validation, registered as distill.registered_model")
    _add_model_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_args(p, "YAML config (data, tracking, calibration, quantize sections)",
                     "quantize.calibration_rows=512")

    p = sub.add_parser("tune", help="hyper-parameter search (Optuna, resumable): short trials as nested MLflow "
                                    "runs, then one full run of the winner, registered")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="finished trials the study needs (default: search.n_trials); a rerun continues the study")
    p.add_argument("--no-winner", action="store_true", help="skip the full run of the best params "
                                                            "(search.train_winner=false)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the per-trial lines stay)")
    _add_config_args(p, example="search.steps_per_trial=300")

    p = sub.add_parser("evaluate", help="score a model on a split: metrics, benchmarks, calibration, bias "
                                        "slices, errors -> report dir + MLflow run")
    _add_model_arg(p)
    p.add_argument("--split", default=None, help="split to score (default: evaluation.split, i.e. test)")
    p.add_argument("--out", default=None, help="report directory (default: <evaluation.output_dir>/<model>-<split>)")
    p.add_argument("--no-mlflow", action="store_true", help="write the report only, log no evaluation run")
    p.add_argument("--compare-to", default=None, metavar="REF",
                   help="also score REF on the same rows and write comparison.md/.json: --model minus REF with "
                   "paired-bootstrap 95%% CIs per policy, source, shared-source pool, benchmark and behaviour "
                   "capability")
    _add_config_args(p, "YAML config (data, tracking, evaluation sections)", "evaluation.bootstrap_samples=200")
    _add_tracking_arg(p, "config, then env")

    p = sub.add_parser("promote", help="move @champion to a candidate version if it does not regress on "
                                       "validation (or --rollback)")
    _add_model_arg(p, "--candidate", required=False)
    p.add_argument("--force", action="store_true", help="promote even if the gate refuses (needs --reason)")
    p.add_argument("--reason", default=None, help="why (recorded on the version); required with --force")
    p.add_argument("--rollback", action="store_true", help="put @champion back on the previous champion")
    p.add_argument("--strict", action="store_true", help="exit 1 when the promotion is refused (automation)")
    p.add_argument("--no-test", action="store_true", help="skip the test metrics printed beside (faster)")
    p.add_argument("--name", default=None, help="registered model for --rollback (default: tracking.registered_model)")
    _add_config_args(p, "YAML config (data, tracking, evaluation sections)", "evaluation.bootstrap_samples=200")
    _add_tracking_arg(p, "config, then env")

    p = sub.add_parser("monitor", help="served score log vs the version's validation scores: KS, PSI, flag rates, "
                                       "a plot; exit 3 when a PSI reaches monitor.psi_threshold")
    _add_model_arg(p)
    p.add_argument("--scores", required=True, metavar="LOG", help="served score log (JSONL, TWEETGUARD_SCORE_LOG)")
    p.add_argument("--out", default=None, help="report directory (default: <monitor.output_dir>/monitor-<model>)")
    p.add_argument("--feedback-db", default=None, metavar="URL",
                   help="the service's verdict store (SQLAlchemy URL, e.g. sqlite:///.../feedback.db): adds the "
                        "overturn rate per policy and tier")
    _add_config_args(p, "YAML config (monitor, tracking; data for a reference computed on demand)",
                     "monitor.psi_threshold=0.1")
    _add_tracking_arg(p, "config, then env")

    p = sub.add_parser("package", help="import a model into the BentoML store and build its bento")
    _add_model_arg(p)
    p.add_argument("--bentoml-home", default=None, help="BentoML store dir (default: $BENTOML_HOME or ~/bentoml)")

    p = sub.add_parser("serve", help="serve a built bento (bentoml serve), on loopback unless --host is given")
    p.add_argument("--bento", default="tweetguard:latest", help="bento tag (default: the latest built)")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 exposes the service")

    p = sub.add_parser("predict", help="score a .csv/.tsv/.jsonl file: adds <policy>_probability, _flagged and "
                       "_action columns")
    _add_model_arg(p)
    p.add_argument("--input", required=True, help="input file (.csv, .tsv or .jsonl)")
    p.add_argument("--output", required=True, help="output file (.csv, .tsv or .jsonl)")
    p.add_argument("--text-column", default="text", help="column/field holding the text (default: text)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="write rows without usable text with empty scores (default: fail listing them)")
    p.add_argument("--explain", action="store_true",
                   help="add <policy>_reasons columns: the words that drove each score (occlusion, serving.reasons)")
    p.add_argument("--top-k", type=int, default=5, help="with --explain: words listed per policy (default: 5)")
    _add_tracking_arg(p, "$MLFLOW_TRACKING_URI")

    p = sub.add_parser("sample", help="choose the texts worth a label: uncertainty, disagreement, stratified "
                       "(with sampling weights) or random")
    _add_model_arg(p, required=False)
    p.add_argument("--input", required=True, help="a .csv/.tsv/.jsonl of texts, or a score log written with "
                   "TWEETGUARD_LOG_TEXTS")
    p.add_argument("--text-column", default="text", help="column/field holding the text (default: text)")
    p.add_argument("--n", type=int, required=True, help="how many texts to sample")
    p.add_argument("--strategy", required=True, choices=["uncertainty", "disagreement", "stratified", "random"])
    p.add_argument("--output", required=True, help="output file (.csv, .tsv or .jsonl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--challenger", default=None, metavar="REF",
                   help="disagreement: the second model (default: models:/tweetguard@challenger)")
    p.add_argument("--feedback-db", default=None, metavar="URL",
                   help="never sample a text already labelled in this verdict store (SQLAlchemy URL)")
    _add_tracking_arg(p, "$MLFLOW_TRACKING_URI")

    p = sub.add_parser("feedback", help="the service's store of moderators' verdicts (POST /feedback)")
    fsub = p.add_subparsers(dest="feedback_command", required=True)
    purge = fsub.add_parser("purge", help="delete the verdicts received before a date (stored texts are personal "
                            "data)")
    purge.add_argument("--before", required=True, help="UTC date or time, ISO 8601 (e.g. 2026-11-01)")
    purge.add_argument("--db", default=None, help="SQLAlchemy URL of the store (default: $TWEETGUARD_FEEDBACK_DB, "
                       "else SQLite in $TWEETGUARD_DATA_DIR, the service's defaults)")

    snap = fsub.add_parser("snapshot", help="freeze the verdicts usable for training into a feedback snapshot")
    snap.add_argument("--db", default=None, help="SQLAlchemy URL of the store (default: as for purge)")
    snap.add_argument("--snapshots", default=None, metavar="DIR",
                      help="snapshot folder (default: <$TWEETGUARD_DATA_DIR>/snapshots)")

    p = sub.add_parser("label", help="the Label Studio round trip: export tasks (and a project), import labels "
                       "into a feedback snapshot")
    lsub = p.add_subparsers(dest="label_command", required=True)
    lex = lsub.add_parser("export", help="write Label Studio tasks and the labelling config; with --url, create "
                          "the project")
    lex.add_argument("--input", required=True, help="the texts to label (.csv/.tsv/.jsonl, e.g. tweetguard "
                     "sample's output)")
    lex.add_argument("--text-column", default="text", help="column/field holding the text (default: text)")
    lex.add_argument("--output", required=True, help="tasks file (.json); the config is written beside it")
    lex.add_argument("--model", default=None, metavar="REF",
                     help="the model whose flags pre-annotate the tasks (default: models:/tweetguard@champion)")
    lex.add_argument("--no-predictions", action="store_true",
                     help="blind tasks, no model scores (the test carve); needs no model")
    lex.add_argument("--url", default=None, help="Label Studio URL: also create the project and import the tasks")
    lex.add_argument("--token", default=None, help="Label Studio access token (default: $LABEL_STUDIO_API_KEY)")
    lex.add_argument("--title", default="tweetguard", help="project title (with --url)")
    _add_tracking_arg(lex, "$MLFLOW_TRACKING_URI")
    lim = lsub.add_parser("import", help="pull finished annotations into an immutable feedback snapshot")
    got = lim.add_mutually_exclusive_group(required=True)
    got.add_argument("--input", help="a Label Studio JSON export file")
    got.add_argument("--url", help="Label Studio URL (with --project)")
    lim.add_argument("--project", type=int, default=None, help="with --url: the project id")
    lim.add_argument("--token", default=None, help="Label Studio access token (default: $LABEL_STUDIO_API_KEY)")
    lim.add_argument("--snapshots", default=None, metavar="DIR",
                     help="snapshot folder (default: <$TWEETGUARD_DATA_DIR>/snapshots)")

    p = sub.add_parser("explain", help="show which words drove each policy's score, marked in the text")
    _add_model_arg(p)
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", action="append", help="a text to explain (repeat for more)")
    given.add_argument("--input", help="a .csv/.tsv/.jsonl file of texts")
    p.add_argument("--text-column", default="text", help="with --input: the column holding the text (default: text)")
    p.add_argument("--method", default="occlusion", choices=["occlusion", "integrated_gradients"],
                   help="occlusion (what the service runs) or integrated_gradients (Captum, offline)")
    p.add_argument("--top-k", type=int, default=5, help="words marked per policy (default: 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per text instead of marked text")
    _add_tracking_arg(p, "$MLFLOW_TRACKING_URI")
    return parser


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from training.data.prepare import prepare

    cfg = load_config(args.config, args.overrides)
    prepared = prepare(cfg.data, force=args.force, progress=True)
    print(prepared.card.markdown)
    print(f"dataset: {prepared.path}\ndata card: {prepared.card_md_path} (+ .json)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from training.pipeline.train import train

    cfg = load_config(args.config, args.overrides)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 talks
    if main_rank:
        print(yaml.safe_dump({"config": cfg.model_dump(mode="json")}, sort_keys=False), file=sys.stderr, end="")
    started = time.monotonic()
    result = train(cfg, config_file=args.config, resume=args.resume, progress_bar=not args.no_progress)
    if main_rank:
        print(result.summary(cfg.train.metric) + f" | wall {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    import yaml

    from training.pipeline.distill import distill

    cfg = load_config(args.config, args.overrides)
    if args.teacher:
        cfg.distill.teacher = args.teacher  # assigned, not an override: a reference is not YAML
    print(yaml.safe_dump({"config": cfg.model_dump(mode="json")}, sort_keys=False), file=sys.stderr, end="")
    started = time.monotonic()
    result, distiller = distill(cfg, config_file=args.config, resume=args.resume, progress_bar=not args.no_progress)
    print(f"student: layers {distiller.layers} of {cfg.distill.teacher} | " + result.summary(cfg.train.metric)
          + f" | wall {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from training.pipeline.quantize import quantize

    result = quantize(load_config(args.config, args.overrides), args.model, progress=not args.no_progress)
    print(result.summary(), flush=True)
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from training.pipeline.search import run_search

    extra = ([f"search.n_trials={args.trials}"] if args.trials is not None else []) + \
        (["search.train_winner=false"] if args.no_winner else [])
    cfg = load_config(args.config, args.overrides + extra)
    started = time.monotonic()
    result = run_search(cfg, config_file=args.config, progress_bar=not args.no_progress)
    print(result.summary_md, end="")
    print(f"{result.new_trials} new trial(s) | study {cfg.search.study_name} in {cfg.search.storage} | MLflow "
          f"parent run {result.parent_run_id} | wall {(time.monotonic() - started) / 60:.1f} min")
    if result.winner:
        print("winner: " + result.winner.summary(cfg.train.metric), flush=True)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluation.compare import write_comparison
    from training.evaluation.evaluate import evaluate, load_split
    from training.evaluation.render import benchmark_table

    cfg = load_config(args.config, args.overrides)
    data = load_split(cfg, args.split or cfg.evaluation.split)  # scored by both models with --compare-to
    result = evaluate(args.model, cfg, split=args.split, out_dir=args.out, tracking_uri=args.tracking_uri,
                      data=data, log_to_mlflow=not args.no_mlflow)
    r = result.report
    print(f"evaluated {result.identity.label} ({result.kind}) on {r['model']['split']}: {r['rows']} rows")
    print("mean PR-AUC {:.4f}, mean ROC-AUC {:.4f}".format(r["overall"]["mean_pr_auc"], r["overall"]["mean_roc_auc"]))
    print(benchmark_table(r["benchmarks"]))
    print(f"report: {result.out_dir}/report.md" + (f" | MLflow evaluation run {result.run_id}" if result.run_id else ""))
    if args.compare_to:
        other = evaluate(args.compare_to, cfg, split=args.split, tracking_uri=args.tracking_uri, data=data,
                         out_dir=result.out_dir / "compared-to", log_to_mlflow=False)
        path = write_comparison(other, result, cfg, args.tracking_uri)
        print(path.read_text(encoding="utf-8"))
        print(f"comparison: {path}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from training.evaluation.evaluate import load_split
    from training.registry.promote import describe_decision, feedback_carve, promote, rollback
    from training.tracking.runs import check_reachable, resolve_uri

    cfg = load_config(args.config, args.overrides)
    uri = resolve_uri(args.tracking_uri or cfg.tracking.uri)
    check_reachable(uri)
    if args.rollback:
        decision = rollback(args.name or cfg.tracking.registered_model, tracking_uri=uri, reason=args.reason)
        print(describe_decision(decision), end="")
        return 0
    if not args.candidate:
        print("tweetguard promote: --candidate REF is required (or --rollback)", file=sys.stderr)
        return 2
    validation = load_split(cfg, "validation")
    test = None if args.no_test and not cfg.data.feedback else load_split(cfg, "test")
    decision = promote(args.candidate, cfg, validation=validation, test=None if args.no_test else test,
                       feedback=feedback_carve(test) if cfg.data.feedback else None, tracking_uri=uri,
                       force=args.force, reason=args.reason)
    print(describe_decision(decision), end="")
    return 1 if args.strict and decision.outcome == "refused" else 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    from training.evaluation.monitor import describe, monitor
    from training.tracking.runs import check_reachable, resolve_uri

    cfg = load_config(args.config, args.overrides)
    check_reachable(resolve_uri(args.tracking_uri or cfg.tracking.uri))
    result = monitor(args.model, args.scores, cfg, out_dir=args.out, tracking_uri=args.tracking_uri,
                     feedback_db=args.feedback_db)
    print(describe(result))
    return result.exit_code  # 0 no drift, 3 drift, 4 too few rows (training.evaluation.monitor)


def _cmd_package(args: argparse.Namespace) -> int:
    from training.tracking.refs import resolve_model_ref
    from training.release.package import PackageError, package

    model_dir = resolve_model_ref(args.model)
    try:
        tag = package(model_dir, bentoml_home=args.bentoml_home, ref=args.model)
    except PackageError as e:
        print(f"tweetguard package: {e}", file=sys.stderr)
        return 1
    print(f"bento: {tag}\nserve it: tweetguard serve --bento {tag}   (same as: bentoml serve {tag})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from training.release.package import PackageError, check_bento, serve_command

    try:
        check_bento(args.bento)
    except PackageError as e:
        print(f"tweetguard serve: {e}", file=sys.stderr)
        return 2
    cmd = serve_command(args.bento, host=args.host, port=args.port)
    print("+ " + " ".join(cmd[2:]), file=sys.stderr, flush=True)
    # Become the server (exec, not a child): a stop signal then reaches bentoml itself, not just a wrapper.
    os.execv(cmd[0], cmd)
    return 0  # not reached


def _cmd_predict(args: argparse.Namespace) -> int:
    from training.tracking.refs import resolve_model_ref
    from training.data.tables import describe_bad_rows
    from training.release.predict import check_input, predict_job

    # The input is checked before torch is imported and the model fetched: its mistakes fail in a second.
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    job = check_input(args.input, args.output, text_column=args.text_column, skip_bad_rows=args.skip_bad_rows,
                      explain=args.explain)
    from transformers.utils import logging as hf_logging

    from serving.predictor import Predictor

    hf_logging.disable_progress_bar()  # keep stderr to our own progress bar and messages
    model_dir = resolve_model_ref(args.model, tracking_uri=args.tracking_uri)
    predictor = Predictor.load(model_dir, batch_size=args.batch_size)
    print(f"model: {args.model} -> {model_dir}", file=sys.stderr)
    summary = predict_job(predictor, job, explain_top_k=args.top_k if args.explain else None)
    if summary.bad_rows:
        print(f"skipped {len(summary.bad_rows)} bad rows (empty scores):\n"
              f"{describe_bad_rows(summary.bad_rows, job.input_path)}", file=sys.stderr)
    print(f"wrote {summary.rows} rows to {summary.output}: {summary.scored} scored, "
          f"{len(summary.bad_rows)} skipped, {summary.truncated} truncated", file=sys.stderr)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from training.tracking.refs import resolve_model_ref
    from training.release.explain import explain_texts
    from training.release.predict import input_texts

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    texts = args.text if args.text is not None else input_texts(args.input, args.text_column)
    from transformers.utils import logging as hf_logging

    from serving.predictor import Predictor

    hf_logging.disable_progress_bar()
    model_dir = resolve_model_ref(args.model, tracking_uri=args.tracking_uri)
    explain_texts(Predictor.load(model_dir), texts, method=args.method, top_k=args.top_k, as_json_lines=args.json)
    return 0


def _load_predictor(ref: str, tracking_uri: str | None):
    """The Predictor of a model reference (a directory, runs:/, models:/), without hub progress bars."""
    from transformers.utils import logging as hf_logging

    from serving.predictor import Predictor
    from training.tracking.refs import resolve_model_ref

    hf_logging.disable_progress_bar()
    return Predictor.load(resolve_model_ref(ref, tracking_uri=tracking_uri))


def _cmd_sample(args: argparse.Namespace) -> int:
    from training.release.sample import sample_file

    predictor = _load_predictor(args.model or "models:/tweetguard@champion", args.tracking_uri)
    challenger = None
    if args.strategy == "disagreement":
        challenger = _load_predictor(args.challenger or "models:/tweetguard@challenger", args.tracking_uri)
    result = sample_file(predictor, args.input, args.output, n=args.n, strategy=args.strategy,
                         text_column=args.text_column, seed=args.seed, challenger=challenger,
                         feedback_db=args.feedback_db)
    print(f"sampled {len(result.rows)} of {result.candidates} candidate texts ({args.strategy}, seed {args.seed}) "
          f"into {args.output}; left out {result.excluded_repeats} exact or near repeats and "
          f"{result.excluded_labelled} texts already labelled", file=sys.stderr)
    return 0


def _snapshots_dir(given: str | None) -> str:
    from serving.schemas import ServiceSettings

    return given or str(Path(ServiceSettings.from_env().data_dir).expanduser() / "snapshots")


def _print_snapshot(snapshot, what: str) -> None:
    state = "written" if snapshot.created else "unchanged (already there)"
    print(f"{what}: {snapshot.rows} verdicts -> {snapshot.path} ({state}; sha256 {snapshot.sha256})")


def _cmd_feedback(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from serving.feedback import FeedbackStore, sqlite_url
    from serving.schemas import ServiceSettings

    settings = ServiceSettings.from_env()
    url = args.db or settings.feedback_db or sqlite_url(settings.data_dir)
    if args.feedback_command == "snapshot":
        from training.data.feedback import store_verdicts, write_snapshot

        rows, unusable = store_verdicts(FeedbackStore(url).rows())
        _print_snapshot(write_snapshot(rows, _snapshots_dir(args.snapshots), origin="feedback", source=url),
                        "feedback snapshot")
        print(f"left out {unusable} verdicts without a matching text (not usable for training)")
        return 0
    try:
        before = datetime.fromisoformat(args.before)
    except ValueError:
        raise ValueError(f"--before {args.before!r}: not an ISO 8601 date or time (e.g. 2026-11-01)") from None
    if before.tzinfo is None:
        before = before.replace(tzinfo=timezone.utc)
    n = FeedbackStore(url).purge(before.timestamp())
    print(f"deleted {n} verdicts received before {before.isoformat()} from {url}")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from training.release import label

    if args.label_command == "import":
        done = label.import_labels(_snapshots_dir(args.snapshots), input_path=args.input, url=args.url,
                                   token=args.token, project=args.project)
        _print_snapshot(done.snapshot, "label snapshot")
        print(f"skipped {done.cancelled} cancelled annotations")
        return 0
    predictor = model = None
    if not args.no_predictions:
        model = args.model or "models:/tweetguard@champion"
        predictor = _load_predictor(model, args.tracking_uri)
    done = label.export(args.input, args.output, predictor=predictor, model_version=model,
                        text_column=args.text_column, url=args.url, token=args.token, title=args.title)
    blind = "blind (no predictions)" if predictor is None else f"pre-annotated by {model}"
    print(f"{done.n} tasks, {blind} -> {done.tasks}; labelling config -> {done.config}")
    if done.project is not None:
        print(f"Label Studio project {done.project}: {args.url.rstrip('/')}/projects/{done.project}")
    return 0


COMMANDS = {
    "config": _cmd_config,
    "data": _cmd_data,
    "train": _cmd_train,
    "distill": _cmd_distill,
    "quantize": _cmd_quantize,
    "tune": _cmd_tune,
    "evaluate": _cmd_evaluate,
    "promote": _cmd_promote,
    "monitor": _cmd_monitor,
    "package": _cmd_package,
    "serve": _cmd_serve,
    "predict": _cmd_predict,
    "explain": _cmd_explain,
    "feedback": _cmd_feedback,
    "sample": _cmd_sample,
    "label": _cmd_label,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"tweetguard {args.command}: config error:\n{e}", file=sys.stderr)
        return 2
    except TrackingError as e:
        print(f"tweetguard {args.command}: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"tweetguard {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
