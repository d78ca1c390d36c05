"""The one config system: pydantic models with defaults, then a YAML file, then `key.sub=value` overrides.

Every field has a type, a default and a description; unknown keys are rejected with their dotted name and the
file (or override) they came from. The resolved config is what gets printed, logged to MLflow and saved in the
model artifact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.backbone import BUNDLED_BACKBONE

DEFAULT_DATA_ROOT = "../shared/datasets"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    root: str = Field(
        default_factory=lambda: os.environ.get("TWEETGUARD_DATA_ROOT", DEFAULT_DATA_ROOT),
        description="Directory holding the shared datasets (env TWEETGUARD_DATA_ROOT); relative to the CWD.",
    )
    sources_file: str = Field("configs/datasets.yaml", description="Source declarations: files, splits, mapping.")
    include: list[str] | None = Field(None, description="Source names to use; null = every declared source.")
    exclude: list[str] = Field(default_factory=list, description="Source names to leave out.")
    exclude_licenses: list[str] = Field(
        default_factory=list,
        description="Leave out sources whose license tag is listed (e.g. GPL-3.0, unverified) for a release.",
    )
    seed: int = Field(13, description="Seed of the generated (stratified) splits.")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of a split-less source for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of a split-less source for test.")
    on_bad_rows: Literal["error", "skip"] = Field(
        "error", description="error: fail listing the first malformed rows; skip: drop them, counted in the card."
    )
    max_train_rows_per_source: int | None = Field(
        None, ge=1, description="Cap on train rows per source (seeded sample), for quick runs; null = all."
    )
    cache_dir: str = Field("data/cache", description="Where prepared DatasetDicts are cached, keyed by content hash.")


class ModelConfig(Section):
    backbone: str = Field(
        BUNDLED_BACKBONE,
        description=f"'{BUNDLED_BACKBONE}' (the bundled MiniLM package), a local HF model dir, or a hub id.",
    )
    max_length: int = Field(128, ge=8, le=512, description="Tokens per text; longer texts are truncated.")


class TrackingConfig(Section):
    uri: str | None = Field(
        None, description="MLflow tracking URI; null = env MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."
    )
    experiment: str = Field("tweetguard", description="MLflow experiment name.")
    registered_model: str = Field("tweetguard", description="Registry name the trained model is registered under.")


class Config(Section):
    run_name: str | None = Field(None, description="MLflow run name; null = generated.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


M = TypeVar("M", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=3e-5` -> (["train", "lr"], 3e-5); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def _describe(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown config key '{key}'")
        else:
            lines.append(f"{origin}: {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def validate(model: type[M], raw: dict[str, Any], origin: str) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, origin)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key.sub=value` overrides, validated; errors name the file or override."""
    raw = read_yaml(path) if path else {}
    origin = str(path) if path else "defaults"
    if overrides:
        validate(Config, raw, origin)  # blame the file for its own mistakes before applying overrides
        origin = f"{origin} + overrides {' '.join(overrides)}"
        raw = apply_overrides(raw, overrides)
    return validate(Config, raw, origin)


def to_flat(cfg: BaseModel) -> dict[str, Any]:
    """`{"data.seed": 13, ...}` for MLflow params and printing."""
    return _flatten(cfg.model_dump(mode="json"), "")


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
