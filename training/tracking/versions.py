"""The MLflow model registry's writes and lookups: registering a version, aliases, tags, which version a
reference names, and the champion history. (Resolving a reference to files is `training.tracking.refs`.)
Every call takes the tracking URI explicitly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from training.tracking.refs import MODELS_URI
from training.tracking.runs import client

CHAMPION, CHALLENGER = "champion", "challenger"  # registry aliases: the served model / the last candidate
# MLflow's logged model -> registered versions link, spelled here as PARENT_TAG is in tracking.py: the public
# `mlflow.register_model` writes it, but only on the global registry URI (this module names its store on every
# call), and MLflow's constant for it lives in the internal `mlflow.utils.mlflow_tags` (a test pins the two equal).
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
LOGGED_MODEL_URI = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)$")  # a version's source when it is a logged model
HISTORY_TAG = "champion_history"  # registered-model tag: JSON list of past champion versions, oldest first
# A distilled student's version tags (training.fit.distill): its teacher's reference and registered version.
TEACHER_REF_TAG, TEACHER_VERSION_TAG = "teacher.ref", "teacher.version"


@dataclass
class ModelIdentity:
    """What a model reference points at: registry name/version when it is a registered version."""

    ref: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version else self.ref

    def tags(self) -> dict[str, str]:
        out = {"model_ref": self.ref}
        out.update({k: v for k, v in (("model_name", self.name), ("model_version", self.version),
                                      ("model_run_id", self.run_id)) if v})
        return out


def identify(ref: str, tracking_uri: str, card_run_id: str | None = None) -> ModelIdentity:
    """The registry identity of `ref` (models:/name@alias, models:/name/N, runs:/id/..., or a directory)."""
    m = MODELS_URI.match(ref)
    if m:
        c = client(tracking_uri)
        mv = (c.get_model_version_by_alias(m["name"], m["alias"]) if m["alias"]
              else c.get_model_version(m["name"], m["version"]))
        return ModelIdentity(ref, mv.name, str(mv.version), mv.run_id)
    if ref.startswith("runs:/"):
        return ModelIdentity(ref, run_id=ref.split("/")[1])
    return ModelIdentity(ref, run_id=card_run_id)


def registered(ref: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a models:/ reference; ValueError naming the accepted forms otherwise."""
    m = MODELS_URI.match(ref)
    if not m:
        raise ValueError(f"{ref!r}: promotion works on registered versions: models:/<name>/<version> or "
                         f"models:/<name>@<alias>")
    return m["name"], m["alias"], m["version"]


def alias_version(name: str, alias: str, tracking_uri: str) -> str | None:
    aliases = client(tracking_uri).get_registered_model(name).aliases
    return str(aliases[alias]) if alias in aliases else None


def set_alias(name: str, alias: str, version: str, tracking_uri: str) -> None:
    client(tracking_uri).set_registered_model_alias(name, alias, version)


def set_version_tags(name: str, version: str, tags: dict[str, str], tracking_uri: str) -> None:
    c = client(tracking_uri)
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, v)


def version_tags(name: str, version: str, tracking_uri: str) -> dict[str, str]:
    return dict(client(tracking_uri).get_model_version(name, version).tags)


def champion_history(name: str, tracking_uri: str) -> list[str]:
    tags = client(tracking_uri).get_registered_model(name).tags
    return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]


def set_champion_history(name: str, history: list[str], tracking_uri: str) -> None:
    client(tracking_uri).set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def set_description(name: str, version: str, text: str, tracking_uri: str) -> None:
    client(tracking_uri).update_model_version(name, version, description=text)


def register_model(model_uri: str, name: str, *, run_id: str, tracking_uri: str,
                   tags: dict[str, str] | None = None, model_id: str | None = None) -> str:
    """Register `model_uri` as a new version of `name`; returns the new version number.

    `model_uri` is an MLflow Model logged under the run (`models:/<model_id>`, with `model_id`: what training
    registers, `training.registry.pyfunc`) or a run's plain artifact directory (`runs:/<run_id>/model`: the TF-IDF
    baseline, and every transformer version registered before issue 15). Either way the files are complete before
    they are logged and never rewritten afterwards.
    """
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="tweetguard policy classifier (see policy_card.json)")
    version = c.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)
    if model_id:  # the logged model's link to its version (what mlflow.register_model records; the UI shows it)
        c.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps([{"name": name,
                                                                            "version": version.version}])})
    return str(version.version)


def set_alias_if_missing(name: str, alias: str, version: str, *, tracking_uri: str) -> bool:
    """Point `name@alias` at `version` unless the alias exists already (the first version becomes champion;
    later promotion is the evaluation gate's decision). Returns whether it was set."""
    if alias_version(name, alias, tracking_uri) is not None:
        return False
    set_alias(name, alias, version, tracking_uri)
    return True


def logged_model_id(name: str, version: str, tracking_uri: str) -> str | None:
    """The MLflow 3 logged model behind a registered version (None for a plain-directory version: the TF-IDF baseline
    and versions registered before issue 15). MLflow 3.17's sqlite registry does not keep the version's model_id, so
    it is read from the source, `models:/<model_id>`, where that is missing."""
    mv = client(tracking_uri).get_model_version(name, version)
    match = LOGGED_MODEL_URI.match(mv.source or "")
    return getattr(mv, "model_id", None) or (match["model_id"] if match else None)
