"""The end of every model-making command, in one place: calibrate -> card -> reference -> register -> final metrics.

`finish_model` takes a complete, servable artifact directory (weights or graph, tokenizer, policy card) inside an
open MLflow run and:
1. fits calibration, thresholds and tiers on validation through the serving Predictor (training.fit.calibration);
2. writes the card (only now is the directory complete: a registered version's files never change);
3. saves the validation scores as the version's reference distribution (training.evaluation.reference), the one
   `tweetguard monitor` compares served scores with;
4. logs the threshold metrics (and whatever the command adds), then the artifact as an MLflow Model and registers
   it (`log_and_register`: @challenger, and @champion for the first version when the `Registration` says so),
   with its model cards;
5. logs the card's validation metrics on the run and on its logged model, with the dataset, and the reference.

Fine-tuning and distillation (`finish_training`, the `finish` handed to training.fit.command.fit_transformer) and
quantization (training.pipeline.quantize) call it; the TF-IDF baseline, which calibrates itself
(training.fit.baseline), is only logged and registered (`log_and_register`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serving.artifact import TIERS, PolicyCard, SourceRef, save_artifact, write_card
from training.config import Config
from training.evaluation.cards import attach_model_card
from training.evaluation.hubcard import write_hub_readme
from training.evaluation.reference import REFERENCE_FILE, log_reference, save_reference
from training.fit.calibration import fit_on_validation
from training.fit.command import ARTIFACT_DIR, Trained, TrainResult, log_history
from training.registry.pyfunc import RUN_MODEL_PATH, register_pyfunc
from training.scorer import Scored
from training.tracking.runs import Run, dataset_ref
from training.tracking.versions import (
    CHALLENGER,
    CHAMPION,
    logged_model_id,
    register_model,
    set_alias,
    set_alias_if_missing,
)


@dataclass
class Registration:
    """Where a finished model is registered: `tweetguard train`'s is tracking.registered_model, first version
    @champion; a distilled student's or a quantized model's (training.pipeline) is the fast tier's model, never
    @champion."""

    name: str
    champion: bool = True
    tags: dict[str, str] = field(default_factory=dict)  # on the version, beside backbone and kind
    model_name: str | None = None  # the card's model_name (what the service answers with); None = the card's default


@dataclass
class Finished:
    card: PolicyCard  # as written into the artifact
    scored: Scored  # validation, scored by the artifact with that card (probs calibrated)
    version: str  # the registered version


def finish_model(run: Run, run_dir: Path, artifact: Path, validation, cfg: Config, uri: str,
                 registration: Registration, *, dataset_hash: str, step: int, note: str,
                 schema_version: int | None = None,
                 metrics: Callable[[PolicyCard, Scored], dict[str, float]] | None = None) -> Finished:
    """Calibrate, write the card, save the reference, register and log the final metrics (the module doc).

    `note` is appended to every threshold method (what was calibrated: "weights of step N", a graph); `schema_version`
    overrides the card schema the calibration writes (a quantized model's card is v3); `metrics(card, scored)`, called
    once the card is written, returns more metrics logged with the thresholds at `step` before registration."""
    from serving.predictor import Predictor

    card, scored = fit_on_validation(Predictor.load(artifact, batch_size=64), validation, cfg)
    if schema_version is not None:
        card.schema_version = schema_version
    for spec in card.policies:
        spec.threshold_method += f" ({note})"
    write_card(artifact, card)
    reference = save_reference(run_dir / REFERENCE_FILE, scored.probs, scored.texts, model_dir=artifact,
                               source="registration", dataset_hash=dataset_hash)
    report_disabled_tiers(card)
    run.log_metrics({**threshold_metrics(card), **(metrics(card, scored) if metrics else {})}, step)
    version = log_and_register(run, artifact, cfg, uri, registration)
    # The card's validation metrics, on the run and on its logged model (MLflow 3's model view), with the dataset.
    run.log_metrics({f"final_val_{k}": v for k, v in card.validation_metrics.items() if not k.startswith("train_kept/")},
                    step, model_id=logged_model_id(registration.name, version, uri),
                    dataset=dataset_ref("validation", dataset_hash))
    log_reference(reference, run.run_id, uri)  # beside the version's model, for `tweetguard monitor`
    return Finished(card, scored, version)


def finish_training(trained: Trained, registration: Registration | None = None) -> TrainResult:
    """A fine-tuning (or distillation) run's finish: best weights -> artifact with a card of its lineage -> history
    logged -> `finish_model` (default registration: tracking.registered_model, @champion if it has none)."""
    from serving.modeling import load_model

    cfg, run, run_dir, prepared, p = trained.cfg, trained.run, trained.run_dir, trained.prepared, trained.loop.p
    kept_dir, kept_step, kept_metrics = trained.loop.kept()  # train.keep
    registration = registration or Registration(cfg.tracking.registered_model)
    card = PolicyCard(
        **({"model_name": registration.model_name} if registration.model_name else {}),
        max_length=cfg.model.max_length, head=cfg.model.head, backbone=cfg.model.backbone,
        sources=[SourceRef(**s) for s in prepared.card.fitted_sources], dataset_hash=prepared.fingerprint,
        validation_metrics={f"train_kept/{k}": v for k, v in kept_metrics.items()}, mlflow_run_id=run.run_id,
        config=cfg.model_dump(mode="json"),
    )
    artifact = save_artifact(run_dir / ARTIFACT_DIR, load_model(run_dir / kept_dir), trained.tokenizer, card)
    train_s = log_history(run, run_dir, p, {})
    run.set_tags({"kept_step": str(kept_step)})
    finished = finish_model(run, run_dir, artifact, prepared.dataset["validation"], cfg, trained.uri, registration,
                            dataset_hash=prepared.fingerprint, step=p.step, note=f"weights of step {kept_step}")
    return TrainResult(artifact, run.run_id, finished.version, kept_metrics, p.step, p.stop_reason,
                       p.examples / train_s, p.elapsed / 60)


def threshold_metrics(card: PolicyCard) -> dict[str, float]:
    """`threshold_<policy>` and `threshold_<policy>_<tier>` (enabled tiers) of a card, as run metrics."""
    tiers = {f"threshold_{n}_{t}": v for n, by_tier in card.tier_thresholds.items() for t, v in by_tier.items()
             if v is not None}
    return {**{f"threshold_{n}": t for n, t in card.thresholds.items()}, **tiers}


def report_disabled_tiers(card: PolicyCard) -> None:
    """An unreachable precision target leaves its tier off: say so, never hide it."""
    for spec in card.policies:
        for name in TIERS:
            tier = spec.tier(name)
            if tier and not tier.enabled:
                print(f"{spec.name} {name} tier {tier.note}", file=sys.stderr)


def log_and_register(run: Run, artifact: Path, cfg: Config, uri: str, registration: Registration) -> str:
    """Log the complete artifact (only now: the directory is complete) and register it as a new version.

    A transformer becomes an MLflow Model (pyfunc) wrapping the serving Predictor (`training.registry.pyfunc`). The
    TF-IDF baseline is not a Predictor (`training.evaluation.evaluate.load_scorer`) and its scorer lives in
    `training`, which the MLflow Model never imports: it stays a plain artifact directory, logged and registered
    as every version was before. Both answer to `runs:/<run_id>/model` and `models:/...` references.
    """
    name = registration.name
    tags = {"backbone": cfg.model.backbone, "kind": cfg.model.kind, **registration.tags}
    if cfg.model.kind == "tfidf":
        version = register_model(run.log_model_dir(artifact, RUN_MODEL_PATH), name, run_id=run.run_id,
                                 tracking_uri=uri, tags=tags)
    else:
        write_hub_readme(artifact)  # the directory's Hugging Face model card, before the files are logged
        version = register_pyfunc(artifact, name, run_id=run.run_id, tracking_uri=uri, tags=tags)
    attach_model_card(name, version, artifact, tracking_uri=uri)
    # Every new version is @challenger until `promote` decides; the first transformer version is @champion.
    set_alias(name, CHALLENGER, version, uri)
    if registration.champion:
        set_alias_if_missing(name, CHAMPION, version, tracking_uri=uri)
    return version
