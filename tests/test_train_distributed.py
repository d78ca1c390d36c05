"""`torchrun` data-parallel training: 2 processes on loopback (gloo) equal one process with twice the gradient
accumulation, step for step, through a kill -9 and --resume; one MLflow run, one registered version."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from training.config import load_config, repo_root
from training.fit.command import HISTORY_FILE
from training.pipeline.train import train
from training.fit.loop import LAST_DIR

pytestmark = pytest.mark.integration


def _no_dropout(backbone: Path) -> None:
    # Dropout masks differ per rank by design; without dropout the two runs compute the same function.
    path = backbone / "config.json"
    config = json.loads(path.read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("source_terms", ["none", "affine"])  # affine: the loss-only terms are all-reduced too
def test_torchrun_two_processes_equal_one_with_double_accumulation_through_kill_and_resume(
        tmp_path, mlflow_uri, write_tiny_train_config, kill_after_unsaved_steps, free_port, source_terms):
    # 360 tiny train rows in batches of 12: 30 micro-batches an epoch, 15 steps of 2 (per rank: 1), 2 epochs.
    config = write_tiny_train_config(
        tmp_path, epochs=2, batch_size=12, checkpoint_every_steps=8, eval_every_steps=10,
        early_stopping_patience=None, source_balance=0.5, source_terms=source_terms,
    )
    _no_dropout(tmp_path / "backbone")
    single = train(load_config(config, ["run_name=single", "train.grad_accum=2"]), progress_bar=False)

    run_dir = tmp_path / "runs" / "ddp"
    repo = repo_root()
    env = {**os.environ, "PYTHONPATH": str(repo), "MLFLOW_TRACKING_URI": mlflow_uri, "OMP_NUM_THREADS": "1"}

    def torchrun(*extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                "-m", "training.train", "--config", str(config), "run_name=ddp", "train.grad_accum=1", *extra]

    saved, reached = kill_after_unsaved_steps(torchrun(), run_dir, env, checkpoint_every=8)
    assert 0 < saved < reached
    import subprocess

    done = subprocess.run(torchrun("--resume"), cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "resumed" in done.stderr and done.stdout.count("MLflow run") == 1  # rank 0 alone reports

    a = json.loads((single.artifact_dir.parent / HISTORY_FILE).read_text())
    b = json.loads((run_dir / HISTORY_FILE).read_text())
    assert len(a["losses"]) == len(b["losses"]) == 30
    assert b["losses"] == pytest.approx(a["losses"], rel=1e-4, abs=1e-6)
    assert [e["step"] for e in b["evals"]] == [e["step"] for e in a["evals"]]
    assert [e["mean_pr_auc"] for e in b["evals"]] == pytest.approx([e["mean_pr_auc"] for e in a["evals"]], abs=1e-4)
    wa = load_file(single.artifact_dir.parent / LAST_DIR / "model.safetensors")
    wb = load_file(run_dir / LAST_DIR / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    if source_terms != "none":
        ta, tb = (json.loads((d / "source_terms.json").read_text()) for d in (single.artifact_dir.parent, run_dir))
        flat = [(s, p, k) for s in ta for p in ta[s] for k in ta[s][p]]
        assert flat and [tb[s][p][k] for s, p, k in flat] == pytest.approx([ta[s][p][k] for s, p, k in flat],
                                                                           abs=1e-4)

    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("tweetguard").experiment_id],
                              "tags.world_size = '2'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    versions = client.search_model_versions(f"run_id = '{runs[0].info.run_id}'")
    assert len(versions) == 1 and versions[0].name == "tweetguard"
    losses = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == list(range(1, 31))  # every step once, by rank 0 only
