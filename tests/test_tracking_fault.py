"""The tracking server dies (SIGKILL) mid-training: training stops cleanly with its last checkpoint intact, and once
the server is back on the same store, the `--resume` command it printed finishes the same MLflow run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from training.config import repo_root
from training.fit.checkpoint import latest_checkpoint, load_checkpoint
from training.fit.command import HISTORY_FILE

CHECKPOINT_EVERY = 10
STEPS = 90  # one epoch of the tiny data at batch 4


@pytest.mark.integration
def test_server_killed_mid_training_stops_cleanly_and_resume_finishes_the_same_run(
        tmp_path, mlflow_server_process, write_tiny_train_config):
    server = mlflow_server_process
    config = write_tiny_train_config(tmp_path, batch_size=4, checkpoint_every_steps=CHECKPOINT_EVERY,
                                     eval_every_steps=30, early_stopping_patience=None)
    run_dir = tmp_path / "runs" / "f"
    # MLflow's own retry settings are left unset: the bound under test is training's default.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    env.update(PYTHONPATH=str(repo_root()), MLFLOW_TRACKING_URI=server.uri)
    train = [sys.executable, "-m", "training.train"]  # = `tweetguard train`
    proc = subprocess.Popen([*train, "--config", str(config), "run_name=f", "--no-progress"], cwd=repo_root(),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while latest_checkpoint(run_dir) is None:
            assert proc.poll() is None, f"training ended before its first checkpoint:\n{proc.communicate()[1]}"
            time.sleep(0.02)
        server.kill()
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped_s = time.monotonic() - killed

    # A clean stop: exit 2, one message naming the server and the command to run, no traceback, within the bound.
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert f"MLflow tracking server {server.uri} stopped answering" in err
    assert stopped_s < 60, f"took {stopped_s:.0f}s to notice the server was gone"
    # The checkpoint the message names is intact and loadable; training did not finish.
    checkpoint = latest_checkpoint(run_dir)
    assert f"its checkpoint {checkpoint} is intact" in err
    state = load_checkpoint(checkpoint)
    assert 0 < state["progress"]["step"] < STEPS and not (run_dir / HISTORY_FILE).exists()
    run_id = state["mlflow_run_id"]
    assert f"continue the same MLflow run {run_id}" in err
    command = re.search(r"`(tweetguard train [^`]*--resume[^`]*)`", err).group(1)

    # The server comes back on the same store; the run was left as it was, not ended.
    server.start()
    client = MlflowClient(server.uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    resumed = subprocess.run([*train, *shlex.split(command)[2:], "--no-progress"],
                             cwd=repo_root(), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"MLflow run {run_id} registered version 1" in resumed.stdout

    # One run, finished, each step's metrics once: nothing lost to the stop, nothing logged twice.
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "epochs"
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [run_id]
    for key in ("train_loss", "lr", "epoch"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, STEPS + 1)), key
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_mean_pr_auc")) == [30, 60, 90]
    # Registered once, from this run.
    versions = client.search_model_versions("name = 'tweetguard'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run_id)]
