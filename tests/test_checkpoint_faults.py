"""A checkpoint write that runs out of space keeps the previous checkpoint: the disk-full case is a file-size limit
(RLIMIT_FSIZE, SIGXFSZ ignored, so the write fails with EFBIG as a full disk fails with ENOSPC) set in a child
process that writes the next checkpoint; the state of the last good one is then loaded and compared."""

from __future__ import annotations

import subprocess
import sys

import torch

from training.fit.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

CHILD = r"""
import resource, signal, sys
from pathlib import Path
import torch
from training.fit.checkpoint import save_checkpoint

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write returns EFBIG instead of the process being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))  # no file may grow past 256 KiB
save_checkpoint(Path(sys.argv[1]), 2, {"weights": torch.ones(1_000_000), "step": 2})  # ~4 MB: cannot fit
"""


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path):
    first = {"weights": torch.arange(1000, dtype=torch.float32), "step": 1}
    save_checkpoint(tmp_path, 1, first)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "File too large" in out.stderr, out.stderr[-2000:]
    path = latest_checkpoint(tmp_path)
    assert path.name == "step-0000001"  # the pointer never moved to the half-written step
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["weights"], first["weights"])
    # With space again, the next write succeeds and clears what the failed one left behind.
    save_checkpoint(tmp_path, 2, {"weights": torch.ones(10), "step": 2})
    assert latest_checkpoint(tmp_path).name == "step-0000002"
    assert not list(tmp_path.glob("checkpoints/.*.tmp"))
