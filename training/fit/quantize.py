"""`tweetguard quantize`: a registered model as static int8, its own model in the fast tier.

    tweetguard quantize --model models:/tweetguard-fast@challenger [--config configs/default.yaml] [key=value ...]

Static int8 in ONNX Runtime (QDQ format): the model is exported *unfused* (`serving.fastpath.export_onnx`), and
every MatMul that multiplies by a weight matrix (the encoder's projections and feed-forward layers, 18 of 24 MatMuls
in a 3-layer BERT; attention's activation x activation products stay fp32) gets per-channel symmetric int8 weights
and uint8 activations whose ranges (MinMax) are calibrated once on `quantize.calibration_rows` train texts, batched
by the Predictor exactly as it batches at serving time. Fixed activation scales make a text's score independent of its
batch-mates, which dynamic int8 (scales per padded batch) is not, so served == offline holds.

Quantization moves each text's probability (measured on the 3-layer student: mean |dp| ~0.03), so the result is a
new model, not a numeric path of the old one: a new artifact directory (the source's files, the graph
`model.int8.onnx`, and a policy card v3 whose `quantization` names the graph), calibrated, thresholded and tiered
on validation through the same `fit_on_validation` as training, logged as its own MLflow run and registered under
`distill.registered_model` (the fast tier; never @champion: `tweetguard promote` refuses it like a student). The
Predictor, evaluation, `tweetguard package` and the service load it like any model (`serving.predictor`).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from training.config import Config, ConfigError, repo_root, to_flat

KIND = "quantized"
GRAPH_FILE = "model.int8.onnx"
SOURCE_REF_TAG, SOURCE_VERSION_TAG = "quantized_from.ref", "quantized_from.version"
BATCH_CHECK_ROWS = 64  # validation texts scored alone and together: the batch-mate independence check


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


def calibration_batches(predictor, texts: list[str]) -> list[dict[str, np.ndarray]]:
    """The padded batches (model inputs as numpy) `predictor` builds for `texts`: its normalization, truncation and
    length batching, without running the model."""
    from serving.predictor import Predictor

    names = list(predictor.tokenizer.model_input_names)
    captured: list[dict[str, np.ndarray]] = []

    def capture(batch):
        captured.append({n: batch[n].numpy() for n in names})
        return np.zeros((len(batch[names[0]]), len(predictor.policies)), dtype=np.float32)

    Predictor(capture, predictor.tokenizer, predictor.card, batch_size=predictor.batch_size).logits(texts)
    return captured


def build_int8(model_dir: Path, input_names: list[str], batches: list[dict[str, np.ndarray]], out: Path) -> str:
    """Write the static int8 graph of the model in `model_dir` to `out`; returns what was quantized, in words."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from serving.fastpath import export_onnx

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="tgquant-") as tmp:
        raw, pre = Path(tmp) / "raw.onnx", Path(tmp) / "pre.onnx"
        export_onnx(model_dir, input_names, raw, fuse=False)
        quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        weights = {w.name for w in graph.initializer}
        matmuls = [n for n in graph.node if n.op_type == "MatMul"]
        chosen = [n.name for n in matmuls if any(x in weights for x in n.input)]
        tmp_out = out.with_name(f".{out.name}.tmp")
        quantize_static(str(pre), str(tmp_out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["MatMul"],
                        nodes_to_quantize=chosen, extra_options={"WeightSymmetric": True})
        tmp_out.replace(out)
    return (f"ONNX Runtime quantize_static, QDQ: {len(chosen)} of {len(matmuls)} MatMuls (those with a weight) "
            "with per-channel symmetric int8 weights and uint8 activations (MinMax ranges); everything else fp32")


def quantize(cfg: Config, ref: str, *, progress: bool = True) -> QuantizeResult:
    """Quantize the model `ref` names (see the module doc), calibrate it on validation, log and register it."""
    from serving.artifact import QUANTIZED_SCHEMA_VERSION, Quantization, read_card, sigmoid, write_card
    from serving.predictor import Predictor
    from training.fit.calibration import fit_on_validation
    from training.fit.command import ARTIFACT_DIR, load_data, log_and_register
    from training.fit.distill import weights_sha256
    from training.registry.reference import REFERENCE_FILE, log_reference, save_reference
    from training.registry.refs import resolve_model_ref
    from training.registry.tracking import Run, check_reachable, dataset_ref, git_commit, resolve_uri
    from training.registry.versions import identify, logged_model_id, version_tags

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
        quantized = Predictor.load(artifact)
        card, scored = fit_on_validation(quantized, validation, cfg)
        card.schema_version = QUANTIZED_SCHEMA_VERSION
        for spec in card.policies:
            spec.threshold_method += f" (static int8 graph {GRAPH_FILE})"
        write_card(artifact, card)
        quantized = Predictor.load(artifact)
        check = validation.select(range(min(BATCH_CHECK_ROWS, len(validation))))["text"]
        together = quantized.predict_proba(check)
        alone = np.concatenate([quantized.predict_proba([t]) for t in check])
        raw_dp = np.abs(sigmoid(source.logits(scored.texts)) - scored.raw_probs)  # both before calibration
        agreement = {"batch_dependence_max_abs_dp": float(np.abs(together - alone).max()),
                     "source_vs_int8_uncalibrated_max_abs_dp": float(raw_dp.max()),
                     "source_vs_int8_uncalibrated_mean_abs_dp": float(raw_dp.mean())}
        reference = save_reference(run_dir / REFERENCE_FILE, scored.probs, scored.texts, model_dir=artifact,
                                   source="registration", dataset_hash=prepared.fingerprint)
        run.log_metrics({**agreement, **{f"threshold_{p}": t for p, t in card.thresholds.items()}}, 0)
        version = log_and_register(run, artifact, cfg, uri, champion=False, name=name, tags=tags)
        run.log_metrics({f"final_val_{k}": v for k, v in card.validation_metrics.items()}, 0,
                        model_id=logged_model_id(name, version, uri),
                        dataset=dataset_ref("validation", prepared.fingerprint))
        log_reference(reference, run.run_id, uri)
    metrics = {k: v for k, v in card.validation_metrics.items() if k.endswith("/pr_auc")} | agreement
    return QuantizeResult(artifact, run.run_id, version, metrics, (time.monotonic() - started) / 60)
