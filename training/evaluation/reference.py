"""A registered version's reference score distribution: what `tweetguard monitor` compares served scores with.

The calibrated scores of the validation split under the version's final card (the ones calibration and the
thresholds were fit on) and each validation text's length in characters, in `reference_scores.npz`, logged to the
version's training run under `monitor/` (beside `model/`, never inside it: a registered version's files do not
change). Training writes it at registration from the scores it already has (`training.registry.finish`). For a
version without one, `reference_for` computes it on demand (the validation split of the given config, scored by the
model's own scorer: the serving Predictor for a transformer) and logs it to the run, so it is computed once.

Raw scores, not a sketch: validation is ~12k rows (x 3 float32 = 144 KB); above `MAX_ROWS` a seeded uniform
sample is kept (and said in the meta).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from serving.artifact import CARD_FILE, file_sha256
from serving.policies import POLICIES
from training.tracking.runs import Run, client

REFERENCE_FILE = "reference_scores.npz"
ARTIFACT_PATH = "monitor"  # in the training run: monitor/reference_scores.npz
MAX_ROWS = 100_000


@dataclass
class Reference:
    scores: np.ndarray  # [N, P] calibrated probabilities, POLICIES order
    lengths: np.ndarray  # [N] text length in characters
    meta: dict  # source (registration / on demand), split, rows, dataset_hash, card_sha256, created, sampled_from

    @property
    def rows(self) -> int:
        return len(self.scores)


def save_reference(path: str | Path, scores: np.ndarray, texts: list[str], *, model_dir: str | Path, source: str,
                   dataset_hash: str | None, split: str = "validation") -> Path:
    """Write the reference of the model in `model_dir` (its scores [N, P] of `texts`) to `path`; returns it."""
    scores = np.asarray(scores, dtype=np.float32)
    lengths = np.array([len(t) for t in texts], dtype=np.int32)
    if scores.shape != (len(texts), len(POLICIES)):
        raise ValueError(f"reference scores have shape {scores.shape}; expected ({len(texts)}, {len(POLICIES)})")
    meta = {"source": source, "split": split, "rows": len(texts), "dataset_hash": dataset_hash,
            "card_sha256": file_sha256(Path(model_dir) / CARD_FILE),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if len(texts) > MAX_ROWS:
        keep = np.sort(np.random.default_rng(0).choice(len(texts), MAX_ROWS, replace=False))
        scores, lengths, meta["sampled_from"] = scores[keep], lengths[keep], len(texts)
    return _write(path, Reference(scores, lengths, meta))


def _write(path: str | Path, ref: Reference) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, scores=ref.scores.astype(np.float32), lengths=ref.lengths, policies=np.array(POLICIES),
                        meta=np.array(json.dumps(ref.meta)))
    return path


def load_reference(path: str | Path) -> Reference:
    with np.load(path, allow_pickle=False) as z:
        policies = tuple(str(p) for p in z["policies"])
        if policies != POLICIES:
            raise ValueError(f"{path}: reference of policies {policies}; this code scores {POLICIES}")
        return Reference(z["scores"].astype(np.float64), z["lengths"], json.loads(str(z["meta"])))


def log_reference(path: Path, run_id: str, tracking_uri: str) -> None:
    Run(client(tracking_uri), run_id, tracking_uri).log_artifact_file(path, ARTIFACT_PATH)


def fetch_reference(run_id: str, tracking_uri: str, dst: Path) -> Reference | None:
    """The reference logged to `run_id`, or None if it has none."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    if REFERENCE_FILE not in {Path(a.path).name for a in c.list_artifacts(run_id, ARTIFACT_PATH)}:
        return None
    try:
        local = c.download_artifacts(run_id, f"{ARTIFACT_PATH}/{REFERENCE_FILE}", str(dst))
    except MlflowException:
        return None
    return load_reference(local)


def compute_reference(model_dir: Path, cfg, path: Path) -> Reference:
    """Score the validation split of `cfg.data` with the model (its own scorer) and write the reference to `path`."""
    from training.data.prepare import prepare
    from training.evaluation.evaluate import load_scorer
    from training.scorer import score_split

    prepared = prepare(cfg.data)
    validation = prepared.dataset["validation"]
    scorer = load_scorer(model_dir, batch_size=cfg.evaluation.batch_size)
    if scorer.card.dataset_hash and scorer.card.dataset_hash != prepared.fingerprint:
        print(f"warning: the prepared data ({prepared.fingerprint[:12]}) is not the data this model was trained on "
              f"({scorer.card.dataset_hash[:12]}): pass the training config (--config) for its validation split",
              file=sys.stderr)
    scored = score_split(scorer, validation)
    save_reference(path, scored.probs, scored.texts, model_dir=model_dir, source="on demand",
                   dataset_hash=prepared.fingerprint)
    return load_reference(path)


def reference_for(model_dir: Path, run_id: str | None, cfg, tracking_uri: str, out_dir: Path) -> Reference:
    """The model's reference: logged to its run, else computed now (and logged to the run when there is one).
    A copy is left in `out_dir`."""
    card_sha = file_sha256(Path(model_dir) / CARD_FILE)
    path = Path(out_dir) / REFERENCE_FILE
    if run_id:
        with tempfile.TemporaryDirectory() as tmp:
            found = fetch_reference(run_id, tracking_uri, Path(tmp))
        if found is not None and found.meta.get("card_sha256") == card_sha:
            _write(path, found)
            return found
    ref = compute_reference(Path(model_dir), cfg, path)
    if run_id:
        log_reference(path, run_id, tracking_uri)
    return ref
