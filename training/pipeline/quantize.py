"""`tweetguard quantize`: a registered model as static int8, its own model in the fast tier.

    tweetguard quantize --model models:/tweetguard-fast@challenger [--config configs/default.yaml] [key=value ...]

The graph is built by training.fit.quantize (what is quantized and why: its module doc) from activation ranges of
`quantize.calibration_rows` train texts; the new artifact directory (the source's files, the graph and a policy card
v3 naming it) is then finished like a trained model (training.registry.finish: calibration, thresholds and tiers on
validation, reference, registration under `distill.registered_model`, never @champion), with the graph's agreement
checks logged beside the thresholds.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from training.config import Config, ConfigError, repo_root, to_flat
from training.fit.command import ARTIFACT_DIR, load_data
from training.fit.distill import weights_sha256
from training.fit.quantize import (
    BATCH_CHECK_ROWS,
    GRAPH_FILE,
    KIND,
    SOURCE_REF_TAG,
    SOURCE_VERSION_TAG,
    build_int8,
    calibration_batches,
)
from training.registry.finish import Registration, finish_model
from training.tracking.refs import resolve_model_ref
from training.tracking.runs import Run, check_reachable, git_commit, resolve_uri
from training.tracking.versions import identify, version_tags


@dataclass
class QuantizeResult:
    artifact_dir: Path
    run_id: str
    model_version: str
    metrics: dict[str, float]
    minutes: float

    def summary(self) -> str:
        return (f"quantized in {self.minutes:.1f} min | artifact {self.artifact_dir} | MLflow run {self.run_id} "
                f"registered version {self.model_version} | validation " + " ".join(
                    f"{k}={v:.4f}" for k, v in self.metrics.items()))


def quantize(cfg: Config, ref: str, *, progress: bool = True) -> QuantizeResult:
    """Quantize the model `ref` names (see the module doc), calibrate it on validation, log and register it."""
    from serving.artifact import QUANTIZED_SCHEMA_VERSION, Quantization, read_card, sigmoid, write_card
    from serving.predictor import Predictor

    started = time.monotonic()
    uri = resolve_uri(cfg.tracking.uri)
    check_reachable(uri)
    source_dir = resolve_model_ref(ref, tracking_uri=uri)
    card = read_card(source_dir)
    if card.quantization is not None:
        q = card.quantization
        raise ConfigError(f"--model {ref}: already quantized ({q.method} of {q.source})")
    if not (source_dir / "config.json").is_file():
        raise ConfigError(f"--model {ref}: not a transformer model (no config.json); the TF-IDF baseline has no "
                          "graph")
    identity = identify(ref, uri, card.mlflow_run_id)
    name = cfg.distill.registered_model
    tags = {"kind": KIND, "backbone": card.backbone, SOURCE_REF_TAG: ref, "quantized_from.sha256": weights_sha256(
        source_dir), "git_commit": git_commit(repo_root())}
    if identity.name:
        tags[SOURCE_VERSION_TAG] = f"{identity.name}/{identity.version}"
        # a quantized student keeps its teacher's lineage tags (promote refuses students by them as well)
        tags.update({k: v for k, v in version_tags(identity.name, identity.version, uri).items()
                     if k.startswith("teacher.")})

    prepared = load_data(cfg, progress=progress)
    if card.dataset_hash and prepared.fingerprint != card.dataset_hash:
        print(f"WARNING quantize: calibrating on dataset {prepared.fingerprint}, but {ref} was trained on "
              f"{card.dataset_hash}: pass the config it was trained with", file=sys.stderr)
    train, validation = prepared.dataset["train"], prepared.dataset["validation"]
    n = min(cfg.quantize.calibration_rows, len(train))
    rows = np.sort(np.random.default_rng(cfg.train.seed).choice(len(train), size=n, replace=False))
    source = Predictor.load(source_dir)
    batches = calibration_batches(source, train.select(rows)["text"])

    run_name = cfg.run_name or datetime.now(timezone.utc).strftime("quantize-%Y%m%d-%H%M%S")
    run_dir = Path(cfg.train.output_dir) / run_name
    artifact = run_dir / ARTIFACT_DIR
    if artifact.exists():
        raise FileExistsError(f"{artifact} exists: set another run_name")

    checks: dict[str, float] = {}

    def agreement(card, scored) -> dict[str, float]:
        """The calibrated graph scores a text alone as in a batch, and how far int8 moved the raw scores."""
        quantized = Predictor.load(artifact)
        check = validation.select(range(min(BATCH_CHECK_ROWS, len(validation))))["text"]
        together = quantized.predict_proba(check)
        alone = np.concatenate([quantized.predict_proba([t]) for t in check])
        raw_dp = np.abs(sigmoid(source.logits(scored.texts)) - scored.raw_probs)  # both before calibration
        checks.update({"batch_dependence_max_abs_dp": float(np.abs(together - alone).max()),
                       "source_vs_int8_uncalibrated_max_abs_dp": float(raw_dp.max()),
                       "source_vs_int8_uncalibrated_mean_abs_dp": float(raw_dp.mean())})
        return checks

    with Run.start(uri, cfg.tracking.experiment, run_name, tags, system_metrics=False) as run:
        run.log_params({"quantize.source": ref, "quantize.calibration_rows": n, "train.seed": cfg.train.seed,
                        "data.sources_file": cfg.data.sources_file, **{k: v for k, v in to_flat(cfg).items()
                                                                        if k.startswith("calibration.")}})
        shutil.copytree(source_dir, artifact, ignore=shutil.ignore_patterns("README.md"))
        note = build_int8(source_dir, list(source.tokenizer.model_input_names), batches, artifact / GRAPH_FILE)
        print(f"quantize: {note}", file=sys.stderr)
        card.quantization = Quantization(graph=GRAPH_FILE, source=tags.get(SOURCE_VERSION_TAG, ref), note=note,
                                         source_sha256=tags["quantized_from.sha256"], calibration_rows=n)
        card.schema_version = QUANTIZED_SCHEMA_VERSION
        card.model_name, card.mlflow_run_id = name, run.run_id
        card.validation_metrics = {}
        write_card(artifact, card)  # the graph's card, so the Predictor loads it; calibration is fit next
        finished = finish_model(run, run_dir, artifact, validation, cfg, uri,
                                Registration(name, champion=False, tags=tags), dataset_hash=prepared.fingerprint,
                                step=0, note=f"static int8 graph {GRAPH_FILE}",
                                schema_version=QUANTIZED_SCHEMA_VERSION, metrics=agreement)
    metrics = {k: v for k, v in finished.card.validation_metrics.items() if k.endswith("/pr_auc")}
    return QuantizeResult(artifact, run.run_id, finished.version, metrics | checks, (time.monotonic() - started) / 60)
