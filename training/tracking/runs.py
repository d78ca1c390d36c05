"""MLflow behind one small module: training code calls these functions, never the MLflow API itself.

Every call names its run id explicitly (MlflowClient), so there is no hidden "active run" global state.
URI order: config `tracking.uri` > env MLFLOW_TRACKING_URI > `sqlite:///mlflow.db` in the working directory
(with artifacts under ./mlruns, both gitignored).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"
MAX_PARAM_CHARS = 500  # longer values (e.g. long source lists) are cut: huge params break some stores
PARENT_TAG = "mlflow.parentRunId"  # MLflow's nested-run link (what mlflow.start_run(nested=True) sets)
FLUSH_EVERY = 100  # metric values buffered per log_batch call (a remote server costs a round trip per call)
# `bound_http_retries`: a call to a dead server gives up after 5 refused attempts, 0+2+4+8 s of backoff (+ up to 1 s
# of jitter each), instead of MLflow's 8 attempts over ~4 min; an attempt waits for an answer at most 60 s, not 120.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


DATASET_CONTEXT = "mlflow.data.context"  # MLflow's input tag for how a dataset was used (train, validation, ...)
DIGEST_CHARS = 32  # the store's dataset digest column holds 36 characters; full hashes go in tags


def dataset_ref(split: str, digest: str) -> tuple[str, str]:
    """(name, digest) of a prepared split as a dataset input: the one spelling for runs and logged-model metrics."""
    return f"tweetguard-{split}", digest[:DIGEST_CHARS]


def dataset_entity(name: str, digest: str, path: str | Path):
    """A dataset input at a local path (MLflow's public entity, source type `local`, as its UI expects)."""
    from mlflow.entities import Dataset

    return Dataset(name=name, digest=digest[:DIGEST_CHARS], source_type="local",
                   source=json.dumps({"uri": str(Path(path).resolve())}))


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which URI and what to do."""


class TrackingLost(TrackingError):
    """The tracking server stopped answering during a run. A `Run` context left with it ends nothing: the run stays
    RUNNING in the store, and `--resume` reopens it."""


def client(tracking_uri: str | None):
    """The one way this project builds an MLflow client: tracking and registry on the same store."""
    from mlflow import MlflowClient

    if resolve_uri(tracking_uri).startswith(("http://", "https://")):
        bound_http_retries()
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def download_run_file(tracking_uri: str, run_id: str, name: str) -> Path | None:
    """A file the run logged at its artifact root (e.g. `source_terms_best.json`), downloaded to a fresh temp dir;
    None when the run has no such file. Raises MLflow's error when the store has no such run."""
    import tempfile

    c = client(tracking_uri)
    if name not in {f.path for f in c.list_artifacts(run_id)}:
        return None
    return Path(c.download_artifacts(run_id, name, dst_path=tempfile.mkdtemp(prefix="tweetguard-run-file-")))


def resolve_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def bound_http_retries() -> None:
    """MLflow's client retries a failed request 7 times with exponential backoff, ~4 min per call against a server
    that refuses connections (and waits up to 120 s per attempt on one that does not answer): a training run whose
    tracking server died would sit that long at its next metric flush, then again ending the run. Bounded here,
    for the whole process, unless the user set these variables."""
    for key, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)


def unreachable(uri: str, timeout: float = 5.0) -> str | None:
    """Why a tracking server at `uri` does not answer its health check (None: it answers, or `uri` is no server)."""
    if not uri.startswith(("http://", "https://")):
        return None
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return None
            problem = f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        problem = f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        problem = str(getattr(e, "reason", e))
    return f"{url}: {problem}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (before any data or model is loaded) when a tracking server does not answer."""
    problem = unreachable(uri, timeout)
    if problem:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({problem}). Start it, or set tracking.uri / "
            f"MLFLOW_TRACKING_URI to a reachable server, or unset both to use the local {DEFAULT_URI}."
        )


def artifact_location(uri: str) -> str | None:
    """Artifacts of a new experiment in a local sqlite store go beside the database file (`<db dir>/mlruns`);
    MLflow's own default is ./mlruns in whatever the working directory is. Servers decide for themselves."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
    return None


def source_tags() -> dict[str, str]:
    """MLflow's own source tags (what its UI and search show for a run's origin): user, entry point, commit."""
    import getpass
    import sys

    from training.config import repo_root

    tags = {"mlflow.user": getpass.getuser(), "mlflow.source.type": "LOCAL",
            "mlflow.source.name": sys.argv[0] if sys.argv and sys.argv[0] else "tweetguard"}  # MLflow's convention
    commit = git_commit(repo_root()).removesuffix("-dirty")
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


class Run:
    """One MLflow run, addressed by id. `start` creates it (or reopens it on resume).

    Use it as a context manager: the run ends FINISHED, KILLED (Ctrl-C) or FAILED (any other exception),
    with pending metrics flushed either way. `parent_run_id` makes a new run a nested child of that run (MLflow's
    `mlflow.parentRunId` tag: the UI shows it under its parent), as a hyper-parameter search's trials are.
    """

    def __init__(self, client, run_id: str, uri: str):
        self.client, self.run_id, self.uri = client, run_id, uri
        self._pending: list = []
        self._monitor = None
        self._logged: dict[str, int] = {}  # on resume: the last step the store has of each metric

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str | None, tags: dict[str, str],
              resume_run_id: str | None = None, system_metrics: bool = True,
              parent_run_id: str | None = None) -> "Run":
        c = client(uri)
        if resume_run_id:
            c.get_run(resume_run_id)  # raises if the store no longer has it
            c.update_run(resume_run_id, status="RUNNING")
            run = cls(c, resume_run_id, uri)
            # Steps after the checkpoint may have been logged before the kill; the resumed run recomputes
            # them exactly, so they are not logged twice.
            for key in c.get_run(resume_run_id).data.metrics:
                run._logged[key] = max(m.step for m in c.get_metric_history(resume_run_id, key))
        else:
            exp = c.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else c.create_experiment(experiment, artifact_location(uri))
            if parent_run_id:
                tags = {**tags, PARENT_TAG: parent_run_id}
            info = c.create_run(exp_id, run_name=run_name, tags={**source_tags(), **tags}).info
            run = cls(c, info.run_id, uri)
        if system_metrics:
            run._start_system_metrics(resumed=bool(resume_run_id))
        return run

    def _start_system_metrics(self, resumed: bool) -> None:
        # MLflow's internal monitor, kept on purpose: its public switches (`mlflow.start_run(log_system_metrics=True)`,
        # `mlflow.enable_system_metrics_logging()`) only monitor the fluent API's active run on the global tracking
        # URI, which this module never uses (explicit run ids and URIs); only the monitor takes a run id, a URI and
        # `resume_logging` (a resumed run continues its steps).
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=10, resume_logging=resumed,
                                             tracking_uri=self.uri)
        self._monitor.start()

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def log_params(self, flat: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = []
        for key, value in flat.items():
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            params.append(Param(key, text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 3] + "..."))
        for i in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def log_metrics(self, metrics: dict[str, float], step: int, *, model_id: str | None = None,
                    dataset: tuple[str, str] | None = None) -> None:
        """`model_id`: also the logged model's metrics (MLflow 3: `get_logged_model(model_id).metrics`);
        `dataset`: (name, digest) of the dataset input they were measured on (`dataset_ref`)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        self._pending += [Metric(k, float(v), now, step, model_id=model_id, dataset_name=name, dataset_digest=digest)
                          for k, v in metrics.items() if step > self._logged.get(k, -1)]
        if len(self._pending) >= FLUSH_EVERY or model_id or any(k.startswith("val_") for k in metrics):
            self.flush()

    def flush(self) -> None:
        """Send the buffered metrics. Raises TrackingLost when the call failed and the server no longer answers."""
        try:
            for i in range(0, len(self._pending), 1000):  # MLflow accepts at most 1000 metrics per batch
                self.client.log_batch(self.run_id, metrics=self._pending[i:i + 1000])
        except Exception as e:
            problem = unreachable(self.uri)
            if problem is None:
                raise
            step = max(m.step for m in self._pending)
            raise TrackingLost(f"MLflow tracking server {self.uri} stopped answering while run {self.run_id} "
                               f"logged the metrics of step {step} ({problem})") from e
        self._pending = []

    def log_data(self, card_json: Path, card_md: Path, dataset_dir: Path, fingerprint: str,
                 sources: list[dict[str, str]], split_rows: dict[str, int]) -> None:
        """The data card as artifacts; the prepared dataset (per split) and each source's content hash as
        dataset inputs. `sources`: dicts with name, license, content_hash and path (its data dir)."""
        self.client.log_artifact(self.run_id, str(card_json), "data")
        self.client.log_artifact(self.run_id, str(card_md), "data")
        splits = [(dataset_entity(*dataset_ref(split, fingerprint), dataset_dir),
                   {DATASET_CONTEXT: split, "rows": str(rows), "fingerprint": fingerprint})
                  for split, rows in split_rows.items()]
        sources = [(dataset_entity(f"source-{src['name']}", src["content_hash"], src["path"]),
                    {DATASET_CONTEXT: "source", "license": src["license"], "content_hash": src["content_hash"]})
                   for src in sources]
        self.log_inputs(splits + sources)

    def log_inputs(self, datasets: list[tuple[Any, dict[str, str]]], model_id: str | None = None) -> None:
        """Dataset inputs ((`dataset_entity`, input tags) pairs) and, with `model_id`, the logged model as an input
        (an evaluation run's model)."""
        from mlflow.entities import DatasetInput, InputTag, LoggedModelInput

        self.client.log_inputs(
            self.run_id, datasets=[DatasetInput(d, [InputTag(k, v) for k, v in tags.items()]) for d, tags in datasets],
            models=[LoggedModelInput(model_id)] if model_id else None)

    def log_artifact_file(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model_dir(self, model_dir: Path, artifact_path: str = "model") -> str:
        """The artifact directory as plain files (the same bytes serving loads); returns its runs:/ URI."""
        self.client.log_artifacts(self.run_id, str(model_dir), artifact_path)
        return f"runs:/{self.run_id}/{artifact_path}"

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, TrackingLost):
            self.abandon()
            return
        self.end("FINISHED" if exc_type is None else "KILLED" if issubclass(exc_type, KeyboardInterrupt)
                 else "FAILED")

    def abandon(self) -> None:
        """Leave the run as the store has it (RUNNING), calling nothing: its server is gone. The unsent metrics are
        dropped (a resume recomputes every step after its checkpoint); the system-metrics thread (a daemon) stops
        at its next failed call."""
        self._pending, self._monitor = [], None

    def end(self, status: str = "FINISHED") -> None:
        """status: FINISHED, FAILED or KILLED."""
        try:
            self.flush()
        finally:
            if self._monitor is not None:
                self._monitor.finish()
                self._monitor = None
            self.client.set_terminated(self.run_id, status)
