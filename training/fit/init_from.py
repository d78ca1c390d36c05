"""`train.init_from`: a fine-tuning run that starts from a trained model instead of the bare backbone.

    tweetguard train --config configs/default.yaml train.init_from=models:/tweetguard@champion train.max_steps=300

What carries over (`InitFrom.load_weights`, then training.fit.loop.TrainingLoop's `init_terms`):
- the encoder and head weights: the model `serving.modeling.build_model` makes for this config takes every tensor of
  the referenced model (`serving.modeling.load_model`, the serving load path) in a strict `load_state_dict`;
- the per-(source, policy) source terms of its best step (training.fit.source_terms, `source_terms_best.json`) for
  the pairs this run labels too; a source the saved terms do not know starts at the identity, as in any run.
What does not: the optimizer state and the lr schedule (warmup, then decay over this run's steps), the data, the
config. A `--resume` restores its checkpoint and never looks at the reference again: the checkpoint wins.

The model must fit this config, else a ConfigError names `train.init_from` and the mismatch before any data is
loaded: a transformer model (not the TF-IDF baseline, not a quantized graph) with the config's `model.head`,
`model.max_length`, the policies in this code's order, and the shape of `model.backbone` (`SHAPE_KEYS`).

Where the terms are found: beside the artifact directory training wrote (`<run_dir>/model`: the run dir's files),
else in the MLflow run that trained it (the card's run id): `source_terms_best.json`, or, for a run made before that
file existed, `source_terms.json` (the last step's, rounded). None found: they start at the identity, said on stderr
and in the params.

Lineage: params `derived.init_from` (the reference resolved: an alias becomes models:/<name>/<version>, a directory
its absolute path), `derived.init_from_version`, `derived.init_from_run_id`, `derived.init_from_terms`, and tags
`init_from`, `init_from.ref`, `init_from.name`, `init_from.version`, `init_from.run_id`, `init_from.sha256`. The
policy card has no lineage field; its `config` keeps `train.init_from` as given.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.policies import POLICIES
from training.config import Config, ConfigError
from training.fit.source_terms import BEST_SOURCE_TERMS_FILE, SOURCE_TERMS_FILE

KEY = "train.init_from"
# The encoder's shape: a model whose config differs in any of these cannot load into the model built for the backbone.
SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
              "max_position_embeddings", "type_vocab_size")
TERMS_FILES = (BEST_SOURCE_TERMS_FILE, SOURCE_TERMS_FILE)  # in order of preference


@dataclass
class InitFrom:
    """A resolved `train.init_from`: the model's local directory and its identity, and the saved terms."""

    ref: str  # as configured
    resolved: str  # models:/<name>/<version> for an alias, the absolute path for a directory, else `ref`
    model_dir: Path
    name: str | None
    version: str | None
    run_id: str | None
    sha256: str  # config and weights (training.fit.distill.weights_sha256)
    terms: dict[str, Any] | None  # a source terms file's content (training.fit.source_terms.load_saved)
    terms_from: str  # where `terms` came from, or why there are none

    @classmethod
    def resolve(cls, cfg: Config, uri: str) -> InitFrom:
        """Resolve and check `train.init_from` against `cfg` (ConfigError naming the key and the mismatch)."""
        from serving.artifact import read_card
        from training.fit.distill import weights_sha256
        from training.tracking.refs import MODELS_URI, is_mlflow_uri, resolve_model_ref
        from training.tracking.versions import identify

        ref = str(cfg.train.init_from)
        errors: tuple[type[Exception], ...] = (OSError, ValueError)
        if is_mlflow_uri(ref):
            from mlflow.exceptions import MlflowException

            errors += (MlflowException,)
        try:
            m = MODELS_URI.match(ref)
            if m:  # the alias is read once: the version it names now is the one loaded and recorded
                identity = identify(ref, uri)
                resolved = f"models:/{identity.name}/{identity.version}{m['sub'] or ''}"
            else:
                resolved = ref if is_mlflow_uri(ref) else str(Path(ref).expanduser().resolve())
            model_dir = resolve_model_ref(resolved, tracking_uri=uri)
            card = read_card(model_dir)  # policies (names, order) and preprocessing checked here
            if not m:
                identity = identify(ref, uri, card.mlflow_run_id)
        except errors as e:
            raise ConfigError(f"{KEY}={ref}: {getattr(e, 'message', None) or e}") from None
        check_fits(cfg, ref, model_dir, card)
        if cfg.train.source_terms == "none":
            terms, terms_from = None, "none (train.source_terms=none)"
        else:
            terms, terms_from = find_terms(model_dir, card.mlflow_run_id or identity.run_id, uri)
        return cls(ref, resolved, model_dir, identity.name, identity.version, identity.run_id or card.mlflow_run_id,
                   weights_sha256(model_dir), terms, terms_from)

    def load_weights(self, model) -> None:
        """Every weight of the referenced model into `model` (built by serving.modeling.build_model for the config)."""
        from serving.modeling import load_model

        try:
            model.load_state_dict(load_model(self.model_dir).state_dict(), strict=True)
        except RuntimeError as e:
            raise ConfigError(f"{KEY}={self.ref}: its weights do not load into the model model.backbone and "
                              f"model.head make: {e}") from None

    def describe(self, terms_init: dict[str, list[str]] | None) -> str:
        """One line for stderr: what was loaded, from where (terms_init: TrainingLoop.terms_init)."""
        who = f" ({self.name} v{self.version})" if self.version else ""
        run = f", run {self.run_id}" if self.run_id else ""
        if terms_init is None:
            terms = f"source terms at the identity: {self.terms_from}"
        else:
            terms = (f"source terms of {', '.join(terms_init['loaded']) or 'no source'} from {self.terms_from}; "
                     f"at the identity: {', '.join(terms_init['new']) or 'none'}")
        return f"{KEY}: encoder and head weights of {self.resolved}{who}{run}; {terms}"

    def params(self) -> dict[str, str]:
        return {"derived.init_from": self.resolved, "derived.init_from_version": self.version or "none",
                "derived.init_from_run_id": self.run_id or "none", "derived.init_from_terms": self.terms_from}

    def tags(self) -> dict[str, str]:
        tags = {"init_from": self.resolved, "init_from.ref": self.ref, "init_from.sha256": self.sha256}
        tags.update({f"init_from.{k}": v for k, v in (("name", self.name), ("version", self.version),
                                                      ("run_id", self.run_id)) if v})
        return tags


def check_fits(cfg: Config, ref: str, model_dir: Path, card) -> None:
    """The referenced model must be one this config could have trained: same kind, head, max_length, policies and
    backbone shape."""
    from transformers import AutoConfig

    from serving.backbone import resolve_backbone
    from serving.predictor import read_model_config

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{KEY}={ref}: {why}")

    kind = (card.config.get("model") or {}).get("kind", "transformer")
    if kind != "transformer" or not (model_dir / "config.json").is_file():
        raise refuse(f"model kind {kind!r} (the TF-IDF baseline has no encoder to start from): init_from needs a "
                     "transformer model")
    if card.quantization is not None:
        raise refuse("a quantized model (its scores are an int8 graph): start from the fp32 model it was made "
                     f"from, {card.quantization.source}")
    if card.head != cfg.model.head:
        raise refuse(f"its head is {card.head!r}, model.head is {cfg.model.head!r}")
    if card.max_length != cfg.model.max_length:
        raise refuse(f"its max_length is {card.max_length}, model.max_length is {cfg.model.max_length}")
    theirs = read_model_config(model_dir)
    labels = tuple(theirs.id2label[i] for i in range(theirs.num_labels)) if theirs.id2label else ()
    if labels != POLICIES:
        raise refuse(f"its policies (config.json id2label) are {labels}, this code's are {POLICIES}")
    backbone = AutoConfig.from_pretrained(resolve_backbone(cfg.model.backbone))
    diff = [f"{k} {getattr(theirs, k, None)} vs {getattr(backbone, k, None)}" for k in SHAPE_KEYS
            if getattr(theirs, k, None) != getattr(backbone, k, None)]
    if diff:
        raise refuse(f"its backbone shape differs from model.backbone={cfg.model.backbone} ({', '.join(diff)})")
    if card.backbone and card.backbone != cfg.model.backbone:
        print(f"{KEY}: the model was trained on backbone {card.backbone!r}, model.backbone is "
              f"{cfg.model.backbone!r} (same shape; the tokenizer is model.backbone's)", file=sys.stderr)


def find_terms(model_dir: Path, run_id: str | None, uri: str) -> tuple[dict[str, Any] | None, str]:
    """(the saved source terms, where they came from) of the run that trained `model_dir`; (None, why) if none."""
    for name in TERMS_FILES:  # a local artifact dir training wrote: <run_dir>/model, the run's files beside it
        path = model_dir.parent / name
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")), str(path)
    if not run_id:
        return None, "none (the model names no MLflow run)"
    from training.tracking.runs import download_run_file

    try:
        for name in TERMS_FILES:
            path = download_run_file(uri, run_id, name)
            if path is not None:
                return json.loads(path.read_text(encoding="utf-8")), f"runs:/{run_id}/{name}"
    except Exception as e:  # noqa: BLE001 - the run is not in this store (a copied artifact dir): no terms, said
        return None, f"none (MLflow run {run_id} not readable at {uri}: {type(e).__name__})"
    return None, f"none (run {run_id} logged no source terms)"
