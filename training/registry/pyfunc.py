"""A transformer artifact as an MLflow Model (pyfunc), logged under its training run and registered.

Since issue 15 a registered transformer version is an MLflow Model, so MLflow's own tools take it as it is:
`mlflow.pyfunc.load_model("models:/tweetguard@champion")`, `mlflow models serve`, `spark_udf`,
`mlflow.models.predict`. The model is `pyfunc_model.py`, logged as code; the artifact directory is its artifact
`model` (stored at `artifacts/<directory name>/` inside the MLflow Model, byte for byte what training wrote); the
`serving` package goes along as code. `refs.resolve_model_ref` maps a downloaded MLflow Model back to that
directory, so every `--model` reference still gives tweetguard the artifact.

Storage: the artifact is stored once, in the MLflow Model (MLflow 3 keeps a logged model under
`<experiment artifacts>/models/<model_id>/artifacts`, not in the run's artifacts). Its name is `model`, so
`runs:/<run_id>/model` still names it: MLflow resolves a run path that has no run artifact to the run's logged
model of that name. Versions registered before (plain directories) and the TF-IDF baseline (not a Predictor;
`training.registry.finish.log_and_register`) stay plain directories and resolve as before.

Versions registered before this are plain directories; `python -m training.registry.pyfunc reregister REF`
registers such a version again as a new, pyfunc version (a run of its own, tagged with where it came from; the
old version and its files are only read): the same weights and card, saved by this code, so an old mean head
also becomes loadable by the stock Hugging Face auto classes.

Logging costs one model load and one scoring of the input example: MLflow checks at logging time that the
example's serving payload scores (a failure there is a warning in the log, not an error).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving.policies import POLICIES, TEXT_COLUMN, output_columns, threshold_param
from training.config import repo_root
from training.tracking.runs import client
from training.tracking.versions import register_model

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
# `runs:/<run_id>/model`: the logged MLflow Model's name (and the baseline's plain directory's artifact path).
RUN_MODEL_PATH = "model"
EXAMPLE_TEXTS = ["@USER you are a pathetic idiot, nobody likes you", "what a lovely morning with my dog"]
# The type of each column of `output_columns`, which lists per policy probability, flagged, action.
COLUMN_TYPES = ("double", "boolean", "string")


def signature(policies: tuple[str, ...] = POLICIES):
    """Input: a string column `text` (TEXT_COLUMN). Output: the `tweetguard predict` columns. Params: `<policy>_threshold`
    (double, default null = the policy card's threshold)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
        outputs=Schema([ColSpec(kind, column)
                        for column, kind in zip(output_columns(policies), COLUMN_TYPES * len(policies))]),
        params=ParamSchema([ParamSpec(threshold_param(p), "double", None) for p in policies]),
    )


def pip_requirements() -> list[str]:
    """The serving-only install: pyproject's `serve` extra, the one list of what serving needs (MLflow adds its own
    pin, mlflow==<this version>, which brings pandas). Its torch pin is the CPU build only where pip is pointed at
    https://download.pytorch.org/whl/cpu; on PyPI the same version is the CUDA build (docs/interoperability.md)."""
    project = tomllib.loads((repo_root() / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return list(project["optional-dependencies"]["serve"])


def register_pyfunc(artifact: Path, name: str, *, run_id: str, tracking_uri: str,
                    tags: dict[str, str] | None = None) -> str:
    """Log the complete artifact directory as an MLflow Model under the (open) run `run_id` and register it as a new
    version of `name` (source `models:/<model_id>`, the version's run_id set); returns the version number.

    MLflow 3.17's sqlite registry does not store a version's model_id (it is None when read back): the link is the
    source URI, and the logged model's `mlflow.modelVersions` tag names the version.
    """
    import mlflow
    import pandas as pd

    with _fluent_run(run_id, tracking_uri):  # the sqlite registry looks a models:/ source up on the global URI
        info = mlflow.pyfunc.log_model(
            name=RUN_MODEL_PATH,
            python_model=str(MODEL_CODE),
            artifacts={"model": str(artifact)},
            code_paths=[str(repo_root() / "serving")],
            signature=signature(),
            input_example=pd.DataFrame({TEXT_COLUMN: EXAMPLE_TEXTS}),
            pip_requirements=pip_requirements(),
        )
        return register_model(info.model_uri, name, run_id=run_id, tracking_uri=tracking_uri, tags=tags,
                              model_id=info.model_id)


@contextmanager
def _fluent_run(run_id: str, tracking_uri: str) -> Iterator[None]:
    """`mlflow.pyfunc.log_model` logs to the fluent API's active run on its global tracking URI, process-wide state
    that the rest of this project never uses (`tracking.py`). Set both for the call and put them back: the env
    MLFLOW_TRACKING_URI (MLflow's set_tracking_uri writes it too), a global URI set by someone else, and the run's
    status (a training run stays RUNNING: its own `Run.end` ends it)."""
    import mlflow

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    global_before = mlflow.get_tracking_uri()  # differs only where mlflow.set_tracking_uri outranks the env
    try:
        if global_before != tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        status = client(tracking_uri).get_run(run_id).info.status
        mlflow.start_run(run_id=run_id, log_system_metrics=False)  # sets RUNNING
        try:
            yield
        finally:
            mlflow.end_run(status=status)  # leaves the fluent stack with the status the run had
    finally:
        if global_before != tracking_uri:
            mlflow.set_tracking_uri(global_before)
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before


def reregister(ref: str, *, tracking_uri: str, name: str | None = None) -> str:
    """Register the artifact of `ref` (e.g. an old plain-directory version, `models:/tweetguard/3`) as a new pyfunc
    version of `name` (default: the reference's model name, else tweetguard) in a run of its own; returns the new
    version. The source is only read; the new version gets the model card and the tag `reregistered_from`."""
    from serving.artifact import ArtifactError, read_card
    from training.evaluation.cards import attach_model_card
    from training.evaluation.hubcard import write_hub_readme
    from training.tracking.refs import MODELS_URI, resolve_model_ref
    from training.tracking.runs import Run

    source = resolve_model_ref(ref, tracking_uri=tracking_uri)
    card = read_card(source)  # refuses anything that is not a servable artifact for this code
    if not (source / "config.json").is_file():
        raise ArtifactError(f"{ref}: not a transformer artifact (the TF-IDF baseline is not an MLflow Model)")
    match = MODELS_URI.match(ref)
    name = name or (match["name"] if match else card.model_name)
    tags = {"tweetguard.run_type": "reregister", "reregistered_from": ref,
            "source_training_run": card.mlflow_run_id or "none"}
    with tempfile.TemporaryDirectory() as tmp, \
            Run.start(tracking_uri, "tweetguard", f"reregister {ref}", tags, system_metrics=False) as run:
        artifact = _resave(source, Path(tmp) / "model")
        write_hub_readme(artifact)
        version = register_pyfunc(artifact, name, run_id=run.run_id, tracking_uri=tracking_uri,
                                  tags={"reregistered_from": ref, "backbone": card.backbone})
        attach_model_card(name, version, artifact, tracking_uri=tracking_uri)
    return version


def _resave(source: Path, target: Path) -> Path:
    """The artifact's weights, tokenizer and card saved again by this code: the same tensors, and a mean head
    saved before the head became remote code (model_type bert) gains `tweetguard_bert.py` and an `auto_map`, so
    the stock Hugging Face auto classes load it (docs/interoperability.md). The card is copied byte for byte (a v1 card stays v1)."""
    import shutil

    from transformers import AutoTokenizer

    from serving.artifact import CARD_FILE
    from serving.modeling import load_model
    from serving.predictor import read_model_config

    load_model(source).save_pretrained(target)
    AutoTokenizer.from_pretrained(source, config=read_model_config(source)).save_pretrained(target)
    shutil.copy2(source / CARD_FILE, target / CARD_FILE)  # byte for byte: the card is not this code's to rewrite
    return target


def _main(argv: list[str] | None = None) -> int:
    from training.tracking.runs import resolve_uri

    p = argparse.ArgumentParser(prog="python -m training.registry.pyfunc",
                                description="register an older version's files again as an MLflow Model (pyfunc)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reregister", help="REF (e.g. models:/tweetguard/3) -> a new pyfunc version; REF is only read")
    r.add_argument("ref")
    r.add_argument("--name", default=None, help="registered model name (default: the reference's)")
    r.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    args = p.parse_args(argv)
    uri = resolve_uri(args.tracking_uri)
    version = reregister(args.ref, tracking_uri=uri, name=args.name)
    print(f"registered {args.ref} again as {args.name or 'the same model'} version {version} (an MLflow Model)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
