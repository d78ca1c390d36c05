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
`training.fit.command.log_and_register`) stay plain directories and resolve as before.

Logging costs one model load and one scoring of the input example: MLflow checks at logging time that the
example's serving payload scores (a failure there is a warning in the log, not an error).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving.policies import POLICIES, TEXT_COLUMN, output_columns, threshold_param
from training.config import repo_root
from training.registry.tracking import client
from training.registry.versions import register_model

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
    https://download.pytorch.org/whl/cpu; on PyPI the same version is the CUDA build (README)."""
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
