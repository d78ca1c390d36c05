"""benchmarks/gpu_check.py, the standalone GPU training check, runs end to end on CPU (CI has no GPU): fp32 and
AMP phases, a SIGKILL after the first checkpoint and a resume to the last step that ends where an uninterrupted
run ends (exactly, on CPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from training.config import repo_root


@pytest.mark.integration  # trains a MiniLM-shaped model in subprocesses (slow)
def test_gpu_check_runs_on_cpu_with_a_kill_and_resume():
    out = subprocess.run([sys.executable, str(repo_root() / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                          "--steps", "5", "--texts", "64", "--batch", "8", "--warmup", "1", "--checkpoint-every", "2"],
                         capture_output=True, text=True, timeout=300, cwd="/")  # any cwd: it finds serving/ itself
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("gpu_check OK on cpu"), lines[-1]
    report = json.loads("\n".join(lines[:-1]))
    assert report["fp32"]["steps"] == 5 and report["amp"] is None  # AMP is CUDA only
    kill = report["kill_and_resume"]
    assert kill["killed_after_checkpoint"] >= 2 and kill["resumed"]["resumed_from"] == kill["killed_after_checkpoint"]
    assert kill["resumed"]["steps"] == 5 and kill["final_loss_abs_diff"] == 0.0
