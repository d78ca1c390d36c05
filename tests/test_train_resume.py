"""kill -9 mid-epoch, then --resume: the same per-step losses and final weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.checkpoint import CHECKPOINT_DIR, LATEST
from training.config import load_config
from training.loop import LAST_DIR
from training.train import HISTORY_FILE, train
from tests.tiny import write_tiny_train_config

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_EVERY = 8


def latest_step(run_dir: Path) -> int:
    pointer = run_dir / CHECKPOINT_DIR / LATEST
    return int(pointer.read_text().strip().split("-")[1]) if pointer.is_file() else 0


def _kill_tree(proc: subprocess.Popen) -> None:
    import psutil

    tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    for p in tree:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    proc.wait(30)


def kill_after_unsaved_steps(cmd: list[str], run_dir: Path, env: dict, timeout: float = 180) -> tuple[int, int]:
    """Run `cmd`, SIGKILL it and all its descendants once a checkpoint exists and the progress bar shows later
    steps (descendants: torchrun's training processes are its children, each in a session of its own).

    Returns (checkpoint step, a step the process certainly reached)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = {"step": 0, "log": b""}

    def read() -> None:  # tqdm redraws with \r, so read raw chunks rather than lines
        while chunk := os.read(proc.stderr.fileno(), 4096):
            seen["log"] = (seen["log"] + chunk)[-20000:]
            steps = re.findall(rb"train:\s+\d+%\|[^|]*\|\s+(\d+)/\d+", seen["log"])
            if steps:
                seen["step"] = max(seen["step"], int(steps[-1]))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            saved = latest_step(run_dir)
            # Two steps past a checkpoint and well before the next one: unsaved progress that must be redone.
            if saved and saved + 2 <= seen["step"] < saved + CHECKPOINT_EVERY - 2:
                _kill_tree(proc)
                return latest_step(run_dir), seen["step"]
            if proc.poll() is not None:
                pytest.fail(f"training ended before it could be killed (rc {proc.returncode}):\n"
                            f"{seen['log'][-3000:].decode(errors='replace')}")
            time.sleep(0.02)
        pytest.fail(f"no kill point within {timeout}s:\n{seen['log'][-3000:].decode(errors='replace')}")
    finally:
        if proc.poll() is None:
            _kill_tree(proc)


def test_resume_after_sigkill_repeats_no_batch_and_matches_uninterrupted(tmp_path, mlflow_uri):
    # 2 epochs of 23 steps (grad_accum 2 over 45 micro-batches): the kill and the resume span an epoch end.
    config = write_tiny_train_config(
        tmp_path, epochs=2, batch_size=8, grad_accum=2, checkpoint_every_steps=CHECKPOINT_EVERY,
        eval_every_steps=10, early_stopping_patience=None, source_balance=0.5,
    )
    reference = train(load_config(config, ["run_name=straight"]), progress_bar=False)

    run_dir = tmp_path / "runs" / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": mlflow_uri}
    cmd = [sys.executable, "-m", "training.train", "--config", str(config), "run_name=killed"]
    saved, reached = kill_after_unsaved_steps(cmd, run_dir, env)
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
    # One MLflow run across both sessions.
    assert resumed.run_id != reference.run_id
    from mlflow import MlflowClient

    run = MlflowClient(mlflow_uri).get_run(resumed.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "epochs"
    # Each step's loss once: nothing lost to the kill (flushed at the checkpoint), nothing logged twice.
    history = MlflowClient(mlflow_uri).get_metric_history(resumed.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, 47))
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(straight["losses"])


def test_resume_refuses_a_changed_config_or_a_finished_run(tmp_path, mlflow_uri):
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
