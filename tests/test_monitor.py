"""`tweetguard monitor`: PSI on known values, reading a score log, and the command on a registered tiny model whose
reference is computed on demand (real MLflow sqlite store, real Predictor, the tiny sources' validation split)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from serving.artifact import CARD_FILE, file_sha256, read_card
from serving.policies import POLICIES
from training.cli import main
from training.config import MonitorConfig, load_config
from training.evaluation.monitor import EXIT_DRIFT, EXIT_OK, EXIT_TOO_FEW, monitor, psi, read_score_log
from training.evaluation.reference import ARTIFACT_PATH, REFERENCE_FILE, load_reference


def test_psi_known_values():
    ref = np.arange(100.0)  # quantile edges at 49.5 (2 bins) and 24.75 / 49.5 / 74.25 (4 bins)
    served = np.r_[np.zeros(75), np.full(25, 99.0)]  # 75% below the median, 25% above
    assert psi(ref, served, bins=2) == pytest.approx(0.25 * math.log(1.5) - 0.25 * math.log(0.5))  # 0.2747
    # Everything in the first of four bins: the three empty bins count as a share of 1e-4.
    assert psi(ref, np.zeros(10), bins=4) == pytest.approx(0.75 * math.log(4) + 3 * (1e-4 - 0.25) * math.log(4e-4))
    assert psi(ref, ref) == 0.0
    assert psi(ref, np.r_[ref, ref]) == 0.0  # shares, not counts
    assert psi(np.r_[np.zeros(90), np.arange(1.0, 11)], np.zeros(50)) > 0  # tied quantiles merge bins: finite


def line(model: dict, scores, flags=None, length: int = 20, **extra) -> str:
    scores = dict(zip(POLICIES, map(float, scores)))
    flags = flags or {p: s >= 0.5 for p, s in scores.items()}
    row = {"time": "2026-12-01T10:00:00.000Z", "model": model, "endpoint": "classify", "scores": scores,
           "flags": flags, "length": length, "truncated": False}
    return json.dumps({**row, **extra}) + "\n"


def test_read_score_log_keeps_one_model_and_names_bad_lines(tmp_path):
    ours, other = {"name": "tg", "version": "a", "card_sha256": "1" * 64}, {"name": "tg", "version": "b",
                                                                            "card_sha256": "2" * 64, "run_id": "r2"}
    path = tmp_path / "log.jsonl"
    path.write_text("".join([line(ours, [0.1, 0.2, 0.3]), "\n", "{not json\n", line(other, [0.9, 0.9, 0.9]),
                             line(ours, [0.1, 1.5, 0.3]), json.dumps({"no": "model"}) + "\n",
                             line(ours, [0.4, 0.5, 0.6], length=7)]), encoding="utf-8")
    log = read_score_log(path, "1" * 64)
    assert log.lines == 6 and log.other_models == {"tg:b (run r2)": 1}
    assert [(b.line, b.reason.split(" (")[0]) for b in log.bad] == [
        (3, "not valid JSON"), (5, "scores.harassment missing or not a probability in [0, 1]"),
        (6, "no model.card_sha256")]
    np.testing.assert_allclose(log.scores, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    assert log.lengths.tolist() == [20, 7] and log.flags[1].tolist() == [False, True, True]


@pytest.fixture
def registered(tmp_path, mlflow_uri, tiny_artifact, register_pyfunc_dir, write_tiny_train_config):
    """A registered tiny version without a reference artifact (as every version before this change), and a config
    whose data section has the tiny sources' validation split."""
    version = register_pyfunc_dir(tiny_artifact, mlflow_uri)
    config = write_tiny_train_config(tmp_path / "work")
    return f"models:/tweetguard/{version}", config


def write_log(path: Path, scores: np.ndarray, model: dict, thresholds: dict) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in scores:
            f.write(line(model, row, {p: bool(s >= thresholds[p]) for p, s in zip(POLICIES, row)}))
        f.write(line({**model, "card_sha256": "0" * 64, "version": "older"}, [0.5] * 3))
        f.write("truncated line {\"time\n")
    return path


def test_monitor_on_demand_reference_unshifted_then_shifted(registered, tmp_path, mlflow_uri, tiny_artifact):
    ref, config = registered
    card = read_card(tiny_artifact)
    model = {"name": card.model_name, "version": "bento1", "run_id": None,
             "card_sha256": file_sha256(tiny_artifact / CARD_FILE)}
    cfg = load_config(config, ["monitor.min_rows=200"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    first = monitor(ref, empty, cfg, out_dir=tmp_path / "r0", tracking_uri=mlflow_uri)
    assert first.exit_code == EXIT_TOO_FEW and first.report["reference"]["source"] == "on demand"
    # Computed once, through the Predictor, on this config's validation split, and kept beside the version's model.
    run_id = MlflowClient(mlflow_uri).get_model_version("tweetguard", ref.rsplit("/", 1)[1]).run_id
    assert [a.path for a in MlflowClient(mlflow_uri).list_artifacts(run_id, ARTIFACT_PATH)] == [
        f"{ARTIFACT_PATH}/{REFERENCE_FILE}"]
    reference = load_reference(tmp_path / "r0" / REFERENCE_FILE)
    assert reference.rows == first.report["reference"]["rows"] > 50 and reference.scores.shape[1] == len(POLICIES)

    # Drawn from the reference distribution: no drift. The data config is now broken on purpose: the cached
    # reference is used, never recomputed.
    rng = np.random.default_rng(0)
    same = write_log(tmp_path / "same.jsonl", reference.scores[rng.integers(0, reference.rows, 3000)], model,
                     card.thresholds)
    broken = load_config(config, ["monitor.min_rows=200", f"data.root={tmp_path / 'nowhere'}"])
    ok = monitor(ref, same, broken, out_dir=tmp_path / "r1", tracking_uri=mlflow_uri)
    report = ok.report
    assert ok.exit_code == EXIT_OK, report["verdict"]
    assert report["served_rows"] == 3000 and report["log"]["other_models"] == {"tiny:older (run None)": 1}
    assert report["log"]["bad"] == [{"line": 3002, "reason": report["log"]["bad"][0]["reason"]}]
    for p in POLICIES:
        assert report["policies"][p]["psi"] < 0.05 and report["policies"][p]["ks"] < 0.1, p
        assert report["policies"][p]["flag_rate_served"] == pytest.approx(
            report["policies"][p]["flag_rate_reference"], abs=0.05)
    assert {"monitor.json", "monitor.md", "score_drift.png"} <= {p.name for p in (tmp_path / "r1").iterdir()}

    # The same texts scored higher (p -> sqrt p): drift, exit 3 through the CLI.
    shifted = write_log(tmp_path / "shifted.jsonl", np.sqrt(reference.scores[rng.integers(0, reference.rows, 3000)]),
                        model, card.thresholds)
    from serving.decisions import DecisionSigner
    from serving.feedback import FeedbackStore, sqlite_url

    store, signer = FeedbackStore(sqlite_url(tmp_path / "fb")), DecisionSigner("k")
    token = signer.issue(model="tweetguard:x", text="t", scores={"abusive": 0.9}, thresholds={"abusive": 0.5},
                         tiers={"abusive": {"review": 0.6, "remove": None}})
    store.record(decision_id=token, decision=signer.verify(token), reviewer="r", labels={"abusive": False},
                 note=None, text=None)
    code = main(["monitor", "--model", ref, "--scores", str(shifted), "--out", str(tmp_path / "r2"),
                 "--config", str(config), "--tracking-uri", mlflow_uri, "monitor.min_rows=200",
                 "--feedback-db", sqlite_url(tmp_path / "fb")])
    assert code == EXIT_DRIFT
    assert "| tweetguard:x | abusive | 1 | 0 / 1 | 1.000 | review 1.000 (1) |" in (
        tmp_path / "r2" / "monitor.md").read_text(encoding="utf-8")
    drifted = json.loads((tmp_path / "r2" / "monitor.json").read_text(encoding="utf-8"))
    assert drifted["drifted"] and all(drifted["policies"][p]["psi"] >= MonitorConfig().psi_threshold
                                      for p in drifted["drifted"])
    assert "drift: PSI >= 0.2" in (tmp_path / "r2" / "monitor.md").read_text(encoding="utf-8")
