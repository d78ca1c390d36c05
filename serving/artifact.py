"""The model artifact contract: a directory of Hugging Face `save_pretrained` files + `policy_card.json`.

This directory is what training writes, MLflow stores, evaluation reads and BentoML packages. Loading
validates the card against this code (schema, policy names and order, preprocessing version) and fails with
a message naming the mismatch. A registered artifact's files are never changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.policies import DESCRIPTIONS, POLICIES
from serving.preprocess import PREPROCESS_VERSION

CARD_FILE = "policy_card.json"
# v1: one threshold per policy (every version registered before decision tiers). v2 adds the optional `review`
# and `remove` tiers per policy. v3 adds `quantization` (a model whose scores are a quantized graph it carries,
# `tweetguard quantize`); only such a card is written as v3, so code that reads v2 refuses it with its version
# instead of scoring the fp32 weights beside the graph. All three load; a v1 card has no tiers (every action
# "none").
CARD_SCHEMA_VERSION = 2
QUANTIZED_SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
TIERS = ("review", "remove")  # in rising severity
ACTIONS = ("none", *TIERS)


class ArtifactError(ValueError):
    """The directory is not a usable tweetguard model artifact; the message says why."""


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["none", "temperature", "platt", "isotonic"] = "none"
    temperature: float = Field(1.0, gt=0, description="logit / temperature, for method=temperature and platt")
    bias: float = Field(0.0, description="added after the temperature, for method=platt: sigmoid(logit / T + b)")
    # Isotonic: piecewise-linear map of the raw probability through these knots (x ascending).
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)


class Tier(BaseModel):
    """One decision tier of a policy (schema v2): act when calibrated probability >= threshold.

    Chosen on validation after calibration as the lowest threshold whose precision reaches `target_precision`
    (most recall at that precision). `threshold` None: the target was not reached, so the tier is off and
    `note` says why; it is never silently set to 1.0.
    """

    model_config = ConfigDict(extra="forbid")
    target_precision: float = Field(gt=0, le=1, description="the precision the threshold was chosen for")
    prevalence: float | None = Field(
        None, gt=0, lt=1, description="positive rate precision was computed at; null = the validation mix"
    )
    threshold: float | None = Field(None, ge=0, le=1, description="null: target not reached, tier disabled")
    precision: float | None = Field(None, ge=0, le=1, description="validation precision at the threshold")
    recall: float | None = Field(None, ge=0, le=1, description="validation recall at the threshold")
    note: str = Field("", description="how it was chosen, or why it is disabled")

    @property
    def enabled(self) -> bool:
        return self.threshold is not None


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    threshold: float = Field(0.5, ge=0, le=1, description="flag when calibrated probability >= threshold")
    threshold_method: str = Field("default 0.5", description="how the threshold was chosen, and on what data")
    calibration: Calibration = Field(default_factory=Calibration)
    review: Tier | None = Field(None, description="schema v2: queue for human review at this tier")
    remove: Tier | None = Field(None, description="schema v2: remove (or hide) at this tier")

    def tier(self, name: str) -> Tier | None:
        return getattr(self, name)


class Quantization(BaseModel):
    """Schema v3: the model's scores are those of `graph`, a statically quantized ONNX graph in the artifact
    directory (training.fit.quantize), run by ONNX Runtime; the Hugging Face weights beside it are the fp32 model
    it was made from (kept for lineage and the stock auto classes), not what this card's calibration was fit on."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["static-int8"] = "static-int8"
    graph: str = Field(description="the quantized ONNX file, relative to the artifact directory")
    source: str = Field(description="reference of the fp32 model it was made from")
    source_sha256: str = Field(description="hash of that model's config and weights (training.fit.distill)")
    calibration_rows: int = Field(ge=1, description="train texts the activation ranges were calibrated on")
    note: str = Field("", description="what was quantized, how")


class SourceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    license: str
    content_hash: str


class PolicyCard(BaseModel):
    """`policy_card.json`: everything beyond the HF weights that serving needs, plus lineage."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = CARD_SCHEMA_VERSION
    model_name: str = "tweetguard"
    policies: list[PolicySpec] = Field(
        default_factory=lambda: [PolicySpec(name=p, description=DESCRIPTIONS[p]) for p in POLICIES]
    )
    preprocess_version: str = PREPROCESS_VERSION
    max_length: int = Field(128, ge=8)
    head: str = "mean"
    backbone: str = ""
    sources: list[SourceRef] = Field(default_factory=list)
    dataset_hash: str = ""
    validation_metrics: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    config: dict[str, Any] = Field(default_factory=dict, description="the resolved training config")
    quantization: Quantization | None = Field(None, description="schema v3: scores come from a quantized graph")

    @property
    def thresholds(self) -> dict[str, float]:
        return {p.name: p.threshold for p in self.policies}

    @property
    def tier_thresholds(self) -> dict[str, dict[str, float | None]]:
        """{policy: {tier: threshold, or None where the tier is absent or disabled}}."""
        return {p.name: {t: (p.tier(t).threshold if p.tier(t) else None) for t in TIERS} for p in self.policies}

    def policy(self, name: str) -> PolicySpec:
        return next(p for p in self.policies if p.name == name)


def _check_version(version: object, where: str) -> None:
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ArtifactError(f"{where}: policy card schema_version {version!r} is unknown; this code reads "
                            f"{list(READABLE_SCHEMA_VERSIONS)} (a newer tweetguard wrote it? upgrade to load it)")


def check_card(card: PolicyCard, where: str) -> PolicyCard:
    _check_version(card.schema_version, where)
    if card.schema_version < 2 and any(p.tier(t) for p in card.policies for t in TIERS):
        raise ArtifactError(f"{where}: decision tiers (review / remove) need policy card schema_version 2")
    if (card.quantization is not None) != (card.schema_version >= QUANTIZED_SCHEMA_VERSION):
        raise ArtifactError(f"{where}: a quantized model's card (quantization set) is schema_version "
                            f"{QUANTIZED_SCHEMA_VERSION}, and only such a card is")
    names = tuple(p.name for p in card.policies)
    if names != POLICIES:
        raise ArtifactError(f"{where}: card policies {names} do not match this code's {POLICIES} (names and order)")
    if card.preprocess_version != PREPROCESS_VERSION:
        raise ArtifactError(
            f"{where}: model trained with preprocessing v{card.preprocess_version}, "
            f"this code implements v{PREPROCESS_VERSION}; install the tweetguard version that trained it"
        )
    return card


def file_sha256(path: str | Path) -> str:
    """Content hash of one file (streamed): the lineage of model files and of training sources."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_files(model_dir: str | Path, expected: Mapping[str, str]) -> None:
    """Every file listed (relative path -> sha256) must be in `model_dir` with exactly those bytes; raises
    ArtifactError naming the first that is missing, truncated or changed. Files not listed are not judged."""
    for rel, digest in sorted(expected.items()):
        path = Path(model_dir) / rel
        if not path.is_file():
            raise ArtifactError(f"{path}: missing; the model's metadata lists it (sha256 {digest[:12]}...)")
        actual = file_sha256(path)
        if actual != digest:
            raise ArtifactError(f"{path}: sha256 {actual[:12]}... is not the recorded {digest[:12]}... "
                                "(truncated or changed since it was packaged); re-import the model")


def sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-log(1 + e^-x)): no overflow warnings for large |x|.
    return np.exp(-np.logaddexp(0.0, -x))


def calibrate(logits: np.ndarray, card: PolicyCard) -> np.ndarray:
    """Raw logits [N, P] -> calibrated probabilities [N, P] (float64), per policy as the card says.

    The only place calibration math lives: the Predictor, evaluation and the TF-IDF baseline all call it.
    - none:        sigmoid(logit)
    - temperature: sigmoid(logit / T)
    - platt:       sigmoid(logit / T + b)
    - isotonic:    piecewise-linear map of sigmoid(logit) through the card's knots (x ascending), clamped
                   to the end knots outside their range.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != len(card.policies):
        raise ValueError(f"logits shape {logits.shape}: expected [N, {len(card.policies)}], one column per policy")
    out = np.empty_like(logits)
    for j, spec in enumerate(card.policies):
        cal = spec.calibration
        if cal.method == "none":
            out[:, j] = sigmoid(logits[:, j])
        elif cal.method == "temperature":
            out[:, j] = sigmoid(logits[:, j] / cal.temperature)
        elif cal.method == "platt":
            out[:, j] = sigmoid(logits[:, j] / cal.temperature + cal.bias)
        elif cal.method == "isotonic":
            _check_knots(spec.name, cal.x, cal.y)
            out[:, j] = np.interp(sigmoid(logits[:, j]), cal.x, cal.y)
        else:  # the card schema only admits the three methods above; a new one needs code here
            raise ArtifactError(f"policies[{spec.name}].calibration.method {cal.method!r} is not implemented")
    return out


TierThresholds = Mapping[str, Mapping[str, "float | None"]]  # {policy: {tier: threshold or None (off)}}


def action_of(score: float, tiers: Mapping[str, float | None]) -> str:
    """The most severe tier whose threshold the score reaches ("none" if none): the card's action rule."""
    for tier in reversed(TIERS):
        threshold = tiers.get(tier)
        if threshold is not None and score >= threshold:
            return tier
    return "none"


def decide(scores: Mapping[str, float], thresholds: Mapping[str, float],
           tiers: TierThresholds) -> tuple[dict[str, bool], dict[str, str]]:
    """One text's per-policy (flags, actions): flag when score >= threshold; action by `action_of`.
    The only place the decision rule lives (the Predictor and the service both call it)."""
    flags = {p: bool(s >= thresholds[p]) for p, s in scores.items()}
    return flags, {p: action_of(s, tiers[p]) for p, s in scores.items()}


def _check_knots(policy: str, x: list[float], y: list[float]) -> None:
    where = f"policies[{policy}].calibration"
    if len(x) < 2 or len(x) != len(y):
        raise ArtifactError(f"{where}: isotonic needs >= 2 knots with len(x) == len(y), got {len(x)} and {len(y)}")
    if any(b < a for a, b in zip(x, x[1:])):
        raise ArtifactError(f"{where}.x must be ascending (np.interp silently misbehaves otherwise)")
    if any(not 0.0 <= v <= 1.0 for v in y):
        raise ArtifactError(f"{where}.y values must be probabilities in [0, 1]")


def read_card(model_dir: str | Path) -> PolicyCard:
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        raise ArtifactError(f"{model_dir}: not a tweetguard model artifact (no {CARD_FILE})")
    text = path.read_text(encoding="utf-8")
    try:  # the version first: a newer schema's fields would otherwise fail validation with a vaguer message
        version = json.loads(text).get("schema_version")
    except (json.JSONDecodeError, AttributeError):
        version = None  # not a JSON object: the validation below says so
    if version is not None:
        _check_version(version, str(path))
    try:
        card = PolicyCard.model_validate_json(text)
    except ValidationError as e:
        raise ArtifactError(f"{path}: invalid policy card: {e}") from None
    return check_card(card, str(path))


def write_card(model_dir: str | Path, card: PolicyCard) -> Path:
    """Write atomically (a reader never sees half a card)."""
    check_card(card, str(model_dir))
    path = Path(model_dir) / CARD_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_artifact(model_dir: str | Path, model, tokenizer, card: PolicyCard) -> Path:
    """HF weights + tokenizer + card in one directory: the complete, servable model."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_card(model_dir, card)
    return model_dir
