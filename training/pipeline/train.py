"""`tweetguard train` (also `python -m training.train`, the torchrun entry): fine-tune (training.fit.command) and
finish (training.registry.finish: artifact, calibration, reference, registration), or fit and register the TF-IDF
baseline. Arguments are parsed by `training.cli`.
"""

from __future__ import annotations

import os
import time

from training.config import Config, ConfigError, repo_root
from training.fit.baseline import describe_baseline, train_baseline
from training.fit.command import TrainResult, fit_transformer, load_data, log_inputs
from training.fit.device import resolve_accel
from training.fit.distributed import init_world, local_rank
from training.fit.loop import StopFn
from training.registry.finish import Registration, finish_training, log_and_register
from training.tracking.runs import Run, check_reachable, git_commit, resolve_uri


def train(cfg: Config, *, config_file: str | None = None, resume: bool = False, progress_bar: bool = True,
          register: bool = True, parent_run_id: str | None = None,
          should_stop: StopFn | None = None) -> TrainResult:
    """Fine-tune (model.kind transformer) or fit the TF-IDF baseline (model.kind tfidf); log, register.
    Under torchrun every rank calls this and gets the same result; rank 0 does the tracking and the artifact
    (training.fit.distributed).

    For a hyper-parameter search (training.pipeline.search), transformer only: `register=False` keeps the run to its
    metrics and history (no model artifact, calibration, logged model or registry version), `parent_run_id`
    nests the MLflow run under that run, and `should_stop(metrics, step)` may end training after a validation
    (training.fit.loop)."""

    if cfg.model.kind == "tfidf":
        if cfg.train.init_from:
            raise ConfigError(f"train.init_from={cfg.train.init_from}: model.kind=tfidf is fitted from scratch; "
                              "init_from starts a transformer run from a trained transformer model")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("model.kind=tfidf fits in one process: run it without torchrun")
        return train_tfidf(cfg, config_file=config_file)
    accel = resolve_accel(cfg.train, local_rank())  # before the process group: NCCL needs the device set
    world = init_world(accel.backend)
    try:
        return fit_transformer(cfg, world, config_file, resume, progress_bar and world.main, accel=accel,
                               finish=finish_training if register else None, parent_run_id=parent_run_id,
                               should_stop=should_stop)
    finally:
        world.shutdown()


def train_tfidf(cfg: Config, *, config_file: str | None = None) -> TrainResult:
    """`model.kind: tfidf`: the classical baseline (training.fit.baseline, calibrated there on validation) as its own
    run and registered model; never given @champion (it is the yardstick, not a candidate)."""
    from serving.artifact import read_card, write_card

    uri = resolve_uri(cfg.tracking.uri)
    check_reachable(uri)
    prepared = load_data(cfg)
    tags = {"git_commit": git_commit(repo_root()), "backbone": describe_baseline(cfg.baseline), "kind": "tfidf",
            "config_file": config_file or "(defaults)"}
    with Run.start(uri, cfg.tracking.experiment, cfg.run_name, tags, system_metrics=cfg.train.system_metrics) as run:
        log_inputs(run, cfg, prepared, [], len(prepared.dataset["train"]), len(prepared.dataset["validation"]))
        started = time.monotonic()
        artifact, metrics = train_baseline(cfg, prepared)
        card = read_card(artifact)
        card.mlflow_run_id = run.run_id
        write_card(artifact, card)  # before logging: a registered version's files never change
        run.log_metrics(metrics, 0)
        version = log_and_register(run, artifact, cfg, uri, Registration(cfg.tracking.registered_model, champion=False))
        minutes = (time.monotonic() - started) / 60
        best = {k.removeprefix("validation/"): v for k, v in metrics.items() if k.startswith("validation/")}
        return TrainResult(artifact, run.run_id, version, best, 0, "fitted", 0.0, minutes)
