"""Model references -> local artifact directories, through the MLflow registry when needed.

Read-only: registering and aliases are `training.tracking.versions`. A model reference (`--model REF`) is one of:
- a local artifact directory (what training writes);
- `runs:/<run_id>/model`: a training run's model (its logged MLflow Model `model`, or the directory logged there);
- `models:/<name>@<alias>` (e.g. `models:/tweetguard@champion`) or `models:/<name>/<version>`: a registered
  version;
- any other URI MLflow can download (`mlflow-artifacts:/...`, `s3://...`, `file://...`).
What a reference names is either the artifact directory itself (versions registered before issue 15, the TF-IDF
baseline) or an MLflow Model holding it as its pyfunc artifact `model` (`training.registry.pyfunc`: every transformer
version registered since; `runs:/<run_id>/model` names it too); either way the artifact directory comes back.
MLflow is imported lazily: resolving a local directory must not pay for it.
"""

from __future__ import annotations

import re
from pathlib import Path

from serving.artifact import CARD_FILE, ArtifactError
from training.tracking.runs import client

MLMODEL_FILE = "MLmodel"  # an MLflow Model's description (flavors, signature, artifacts)
REF_FORMS = "an artifact directory, runs:/<run_id>/model, models:/<name>@<alias> or models:/<name>/<version>"
# models:/<name>@<alias>[/sub/path] or models:/<name>/<version>[/sub/path]
MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))(?P<sub>/.*)?$")


def is_mlflow_uri(ref: str) -> bool:
    return ref.startswith(("runs:/", "models:/")) or "://" in ref


def resolve_model_ref(
    ref: str | Path, *, tracking_uri: str | None = None, dst_path: str | Path | None = None
) -> Path:
    """A local directory holding the model artifact that `ref` names (downloaded from MLflow if needed).

    `tracking_uri` defaults to MLflow's own resolution (env MLFLOW_TRACKING_URI, else sqlite:///mlflow.db),
    which is also what `tracking.uri: null` means in the config. `dst_path` is where downloads go (default: a
    fresh temp dir; MLflow returns a local artifact store's path directly without copying). Raises
    FileNotFoundError / ValueError (ArtifactError) with the reference in the message.
    """
    text = str(ref)
    if is_mlflow_uri(text):
        path = _download(text, tracking_uri, dst_path)
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model {text!r}: no such directory; expected {REF_FORMS}")
        if not path.is_dir():
            raise ArtifactError(f"model {text!r} is a file; expected {REF_FORMS}")
    path = _artifact_dir(path, text)
    if not (path / CARD_FILE).is_file():
        hint = " (a run's model lives under runs:/<run_id>/model)" if text.startswith("runs:/") else ""
        raise ArtifactError(f"model {text!r} -> {path}: not a tweetguard model artifact (no {CARD_FILE}){hint}")
    return path


def _artifact_dir(path: Path, ref: str) -> Path:
    """`path` itself, or the artifact directory inside it when it is an MLflow Model (where its MLmodel file says)."""
    mlmodel = path / MLMODEL_FILE
    if not mlmodel.is_file():
        return path
    import yaml

    flavors = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors") or {}
    sub = ((flavors.get("python_function") or {}).get("artifacts") or {}).get("model", {}).get("path")
    if not sub:
        raise ArtifactError(f"model {ref!r} -> {path}: an MLflow Model without tweetguard's artifact (its "
                            f"{MLMODEL_FILE} names no python_function artifact 'model')")
    return path / sub


def _download(uri: str, tracking_uri: str | None, dst_path: str | Path | None) -> Path:
    if uri.startswith("models:/") and not MODELS_URI.match(uri):  # before the slow mlflow import
        raise ValueError(f"model {uri!r}: use models:/<name>@<alias> or models:/<name>/<version>")
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    where = tracking_uri or mlflow.get_tracking_uri()
    try:
        source = (_registry_source(uri, tracking_uri) if uri.startswith("models:/")
                  else _run_source(uri, tracking_uri) if uri.startswith("runs:/") else uri)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source,
            dst_path=None if dst_path is None else str(dst_path),
            tracking_uri=tracking_uri,
        )
    except MlflowException as e:
        raise ArtifactError(f"model {uri!r}: MLflow at {where} could not provide it: {e.message}") from None
    except OSError as e:  # artifact store unreachable or files missing
        raise ArtifactError(f"model {uri!r}: download from MLflow at {where} failed: {e}") from None
    return Path(local)


def _registry_source(uri: str, tracking_uri: str | None) -> str:
    """models:/<name>@<alias> or models:/<name>/<version> -> where that version's files are stored.

    Resolved with an explicit client: MLflow's own models:/ download ignores the registry_uri argument and
    asks the global registry (env MLFLOW_TRACKING_URI), which can be a different store (MLflow 3.17).
    """
    match = MODELS_URI.match(uri)
    assert match, uri  # checked in _download
    c = client(tracking_uri)
    name, alias = match["name"], match["alias"]
    version = c.get_model_version_by_alias(name, alias).version if alias else match["version"]
    return c.get_model_version_download_uri(name, version) + (match["sub"] or "")


def _run_source(uri: str, tracking_uri: str | None) -> str:
    """runs:/<run_id>/<name>[/sub/path] -> the run's logged model `<name>` (an MLflow Model: how training logs a
    transformer since issue 15), else the URI itself (a plain artifact directory of the run).

    Resolved with an explicit client: MLflow's own runs:/ fallback to a run's logged model asks the global tracking
    URI, whatever tracking_uri it was given (MLflow 3.17).
    """
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    name, _, sub = path.partition("/")
    c = client(tracking_uri)
    models = c.search_logged_models([c.get_run(run_id).info.experiment_id],
                                    filter_string=f"name = '{name}' AND source_run_id = '{run_id}'")
    return models[0].artifact_location + (f"/{sub}" if sub else "") if models else uri
