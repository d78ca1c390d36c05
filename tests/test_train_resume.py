"""kill -9 mid-epoch, then --resume: the same per-step losses and final weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

from training.config import load_config, repo_root
from training.fit.command import HISTORY_FILE
from training.pipeline.train import train
from training.fit.loop import LAST_DIR

CHECKPOINT_EVERY = 8


@pytest.mark.integration  # trains in subprocesses and SIGKILLs one (~10 s or more each)
@pytest.mark.parametrize("source_terms", ["none", "affine"])
def test_resume_after_sigkill_repeats_no_batch_and_matches_uninterrupted(
        tmp_path, mlflow_uri, write_tiny_train_config, kill_after_unsaved_steps, source_terms):
    # 2 epochs of 23 steps (grad_accum 2 over 45 micro-batches): the kill and the resume span an epoch end.
    config = write_tiny_train_config(
        tmp_path, epochs=2, batch_size=8, grad_accum=2, checkpoint_every_steps=CHECKPOINT_EVERY,
        eval_every_steps=10, early_stopping_patience=None, source_balance=0.5, source_terms=source_terms,
    )
    reference = train(load_config(config, ["run_name=straight"]), progress_bar=False)

    run_dir = tmp_path / "runs" / "killed"
    env = {**os.environ, "PYTHONPATH": str(repo_root()), "MLFLOW_TRACKING_URI": mlflow_uri}
    cmd = [sys.executable, "-m", "training.train", "--config", str(config), "run_name=killed"]
    saved, reached = kill_after_unsaved_steps(cmd, run_dir, env, checkpoint_every=CHECKPOINT_EVERY)
    assert 0 < saved < reached, f"need a checkpoint and later unsaved steps (checkpoint {saved}, reached {reached})"
    assert not (run_dir / HISTORY_FILE).exists()

    resumed = train(load_config(config, ["run_name=killed"]), resume=True, progress_bar=False)

    straight = json.loads((reference.artifact_dir.parent / HISTORY_FILE).read_text())
    again = json.loads((run_dir / HISTORY_FILE).read_text())
    assert len(again["losses"]) == len(straight["losses"]) == 46
    assert again["losses"] == straight["losses"]  # exact: same batches, same order, same dropout masks
    assert again["evals"] == straight["evals"]
    for name in (LAST_DIR, "model"):
        a = load_file(reference.artifact_dir.parent / name / "model.safetensors")
        b = load_file(run_dir / name / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    if source_terms != "none":  # the loss-only terms were restored too: the same learned values at the end
        terms = [(d / "source_terms.json").read_text() for d in (reference.artifact_dir.parent, run_dir)]
        assert terms[0] == terms[1] and json.loads(terms[0])
    # One MLflow run across both sessions.
    assert resumed.run_id != reference.run_id
    from mlflow import MlflowClient

    run = MlflowClient(mlflow_uri).get_run(resumed.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "epochs"
    # Each step's loss once: nothing lost to the kill (flushed at the checkpoint), nothing logged twice.
    history = MlflowClient(mlflow_uri).get_metric_history(resumed.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, 47))
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(straight["losses"])


def test_resume_refuses_a_changed_config_or_a_finished_run(tmp_path, mlflow_uri, write_tiny_train_config):
    from training.config import ConfigError

    config = write_tiny_train_config(tmp_path, max_steps=4, checkpoint_every_steps=2)
    train(load_config(config, ["run_name=r"]), progress_bar=False)
    with pytest.raises(FileExistsError, match="finished already"):
        train(load_config(config, ["run_name=r"]), resume=True, progress_bar=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(load_config(config, ["run_name=r"]), progress_bar=False)
    (tmp_path / "runs" / "r" / HISTORY_FILE).unlink()  # as if killed after its last checkpoint
    with pytest.raises(ConfigError, match=r"train\.lr"):
        train(load_config(config, ["run_name=r", "train.lr=0.5"]), resume=True, progress_bar=False)


def test_resume_accepts_a_run_saved_before_a_config_key_existed(tmp_path):
    """A run started by older code has no entry for a key added since: it resumes while that key keeps its
    default (which is what the older code trained with), and refuses once the key is set to something else."""
    import json

    from training.config import Config, ConfigError, to_flat
    from training.fit.command import CONFIG_FILE, check_resume_config

    # Keys whose default is what code without them did: one lr for all layers, no gradient accumulation.
    saved = {k: v for k, v in to_flat(Config()).items() if k not in ("train.layer_lr_decay", "train.grad_accum")}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))
    check_resume_config(tmp_path, Config())
    with pytest.raises(ConfigError, match=r"train\.layer_lr_decay: 1\.0 -> 0\.8"):
        check_resume_config(tmp_path, load_config(None, ["train.layer_lr_decay=0.8"]))
