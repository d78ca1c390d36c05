"""GPU training check: tweetguard's own training loop (training.fit.loop.TrainingLoop, on the device and at the
precision training.fit.device resolves, exactly as `tweetguard train` runs it) on synthetic data. Needs torch,
transformers and the project's light dependencies (numpy, scipy, scikit-learn, pydantic, pyyaml, tqdm, emoji);
no mlflow, no datasets, no ../shared. Python 3.11+.

    python benchmarks/gpu_check.py                      # auto: cuda if torch sees one; ~300 steps per precision
    python benchmarks/gpu_check.py --device cpu --steps 5 --texts 256   # what the test suite runs

The model is tweetguard's mean-pooling head (`serving/tweetguard_bert.py`) at the bundled backbone's shape (BERT
MiniLM-L6: 6 layers, 384 hidden, 12 heads, 1,536 FFN, 30,522 vocab), randomly initialised. The texts are
synthetic token-id sequences with tweet-like lengths (8-64 tokens) from a few synthetic sources, and multi-label
targets with unknown labels masked, generated from a seed; the loss is training's (masked BCE, with the default
config's per-source terms). This is a check of the mechanics and speed of training on the device (fp32, and mixed
precision as `train.amp` picks it: bf16 where supported, else fp16 with a gradient scaler), not of quality, and
the project's datasets never leave ../shared.

Phases, reported as JSON and a summary line: fp32 steps, AMP steps (CUDA only; examples/s after a warm-up, the
GPU synchronised, validations left out), then a kill: a child process trains with the loop's checkpoints, is
SIGKILLed after its first one, and a second child resumes from that checkpoint (`TrainingLoop.resume`) to the end;
the resumed run must reach the last step, and its final loss is compared with the fp32 phase's, the same run
uninterrupted (equal on CPU; close on a GPU, whose kernels need not be deterministic).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: serving/, training/ importable

from serving.policies import POLICIES  # noqa: E402
from serving.tweetguard_bert import BertMeanPoolForMultiLabel, TweetGuardBertConfig  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.fit.batches import Encoded  # noqa: E402
from training.fit.checkpoint import latest_checkpoint, load_checkpoint, seed_everything  # noqa: E402
from training.fit.device import Accel, resolve_accel  # noqa: E402
from training.fit.loop import TrainingLoop  # noqa: E402

SHAPE = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
             max_position_embeddings=512)
SOURCES = 4  # synthetic sources, so the per-source loss terms of the default config have something to learn
PAD_ID = 0


def synthetic(n: int, seed: int) -> Encoded:
    """`n` rows: token ids of 8-64 tokens, labels [n, P] in {-1, 0, 1} (40% unknown), round-robin sources."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 65, (n,), generator=g)
    ids = [torch.randint(1000, SHAPE["vocab_size"], (int(k),), generator=g).tolist() for k in lengths]
    labels = torch.randint(0, 2, (n, len(POLICIES)), generator=g)
    labels[torch.rand(n, len(POLICIES), generator=g) < 0.4] = -1  # unknown: masked out of the loss
    return Encoded(ids, labels.numpy().astype(np.int8), [f"synthetic{i % SOURCES}" for i in range(n)])


def device_setting(device: str) -> tuple[str, int]:
    """`--device` as (train.device, local rank): auto, cpu, cuda or cuda:N."""
    kind, _, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise SystemExit(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    return kind, int(index or 0)


def check_config(args, *, amp: bool, checkpoint_every: int | None = None) -> TrainConfig:
    """The defaults of `tweetguard train` for the loss and optimizer, sized for this check: `args.steps` steps of
    `args.batch`, no early stopping or time budget, validation at epoch ends and the end only."""
    return TrainConfig(seed=args.seed, epochs=max(args.steps, 1), max_steps=args.steps, batch_size=args.batch,
                       device=device_setting(args.device)[0], amp=amp, bf16=False, label_weights={},
                       eval_every_steps=None, eval_max_rows=None, early_stopping_patience=None, max_minutes=None,
                       checkpoint_every_steps=checkpoint_every or args.steps + 1, system_metrics=False)


def train(args, accel: Accel, cfg: TrainConfig, run_dir: Path, *, resume: bool = False,
          announce: bool = False) -> dict:
    """`cfg.max_steps` steps of `TrainingLoop`; returns examples/s (after `args.warmup` steps, validations left
    out), the final train loss, the precision and the step it resumed from. ``announce``: print
    `{"checkpoint": step}` on stdout after each checkpoint (the kill-and-resume parent waits for it)."""
    seed_everything(args.seed)
    model = BertMeanPoolForMultiLabel(TweetGuardBertConfig(**SHAPE, num_labels=len(POLICIES)))
    stdout = sys.stdout
    marks: dict[str, tuple[float, float, int]] = {}  # "warm" / "end" -> (time, validation seconds, examples)

    class Loop(TrainingLoop):  # the real loop; it only tells the parent when a checkpoint is on disk
        def checkpoint(self, extra):
            super().checkpoint(extra)
            if announce:
                print(json.dumps({"checkpoint": self.p.step}), file=stdout, flush=True)

    def log(metrics: dict[str, float], step: int) -> None:  # after every optimizer step (log_every_steps=1)
        if "train_loss" not in metrics or step not in (start + warm, cfg.max_steps):
            return
        if accel.cuda:
            torch.cuda.synchronize(accel.device)
        marks["warm" if step == start + warm else "end"] = (time.perf_counter(), loop.p.eval_seconds, loop.p.examples)

    train_rows, val_rows = synthetic(args.texts, args.seed), synthetic(max(args.texts // 8, 32), args.seed + 1)
    loop = Loop(model, train_rows, val_rows, cfg, run_dir, pad_id=PAD_ID, pos_weight=[1.0] * len(POLICIES),
                log=log, progress_bar=False, accel=accel)
    if resume:
        loop.resume()  # the newest checkpoint under run_dir, if any
    start = loop.p.step
    warm = min(args.warmup, max(cfg.max_steps - start - 1, 0))
    with contextlib.redirect_stdout(sys.stderr):  # the loop's validation lines: stdout carries the JSON only
        progress = loop.fit()
    rate = float("nan")
    if "warm" in marks and "end" in marks and marks["end"][2] > marks["warm"][2]:
        (t0, eval0, ex0), (t1, eval1, ex1) = marks["warm"], marks["end"]
        rate = (ex1 - ex0) / max(t1 - t0 - (eval1 - eval0), 1e-9)
    return {"steps": progress.step, "resumed_from": start, "examples_per_s": rate,
            "final_loss": progress.losses[-1], "precision": accel.precision}


def kill_and_resume(args, uninterrupted_loss: float) -> dict:
    """Child 1 trains with checkpoints and is SIGKILLed after its first; child 2 resumes to the end; its final loss
    is compared with the fp32 phase's (the same run, uninterrupted)."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-kill-") as run_dir:
        return _kill_and_resume(args, Path(run_dir), uninterrupted_loss)


def _kill_and_resume(args, run_dir: Path, uninterrupted_loss: float) -> dict:
    base = [sys.executable, __file__, "--child", "--device", args.device, "--steps", str(args.steps),
            "--texts", str(args.texts), "--batch", str(args.batch), "--warmup", str(args.warmup),
            "--seed", str(args.seed), "--checkpoint-every", str(args.checkpoint_every), "--ckpt", str(run_dir)]
    child = subprocess.Popen(base, stdout=subprocess.PIPE, text=True)
    for line in child.stdout:  # the first checkpoint is on disk: kill mid-run
        if '"checkpoint"' in line:
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    killed_at = load_checkpoint(latest_checkpoint(run_dir))["progress"]["step"]
    out = subprocess.run([*base, "--resume"], capture_output=True, text=True, check=True)
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    return {"killed_after_checkpoint": killed_at, "resumed": resumed,
            "final_loss_abs_diff": abs(resumed["final_loss"] - uninterrupted_loss)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--texts", type=int, default=4000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=None, help="default: steps // 3")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.checkpoint_every = args.checkpoint_every or max(args.steps // 3, 1)
    fp32 = check_config(args, amp=False)
    accel = resolve_accel(fp32, device_setting(args.device)[1])  # what `tweetguard train` would run on
    if args.child:  # a kill-and-resume leg: fp32 with checkpoints, prints its result as the last line
        cfg = check_config(args, amp=False, checkpoint_every=args.checkpoint_every)
        print(json.dumps(train(args, accel, cfg, args.ckpt, resume=args.resume, announce=not args.resume)))
        return 0
    device = accel.device
    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                          "gpu": torch.cuda.get_device_name(device) if accel.cuda else None,
                          "cpu": platform.processor() or platform.machine()},
              "settings": {k: v for k, v in vars(args).items() if k not in ("child", "resume", "ckpt")}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-fp32-") as run_dir:  # checkpoints and weights: gone after
        report["fp32"] = train(args, accel, fp32, Path(run_dir))
    # AMP is CUDA only (train.amp); on CPU it would repeat the fp32 run (CPU precision is train.bf16).
    report["amp"] = None
    if accel.cuda:
        amp = check_config(args, amp=True)
        with tempfile.TemporaryDirectory(prefix="gpu-check-amp-") as run_dir:
            report["amp"] = train(args, resolve_accel(amp, device_setting(args.device)[1]), amp, Path(run_dir))
    report["kill_and_resume"] = kill_and_resume(args, report["fp32"]["final_loss"])
    print(json.dumps(report, indent=1))
    ok = report["kill_and_resume"]["resumed"]["steps"] == args.steps and report["kill_and_resume"]["resumed"][
        "resumed_from"] > 0
    amp = report["amp"]
    print(f"gpu_check {'OK' if ok else 'FAILED'} on {device}: fp32 {report['fp32']['examples_per_s']:.0f} ex/s, "
          + (f"{amp['precision']} {amp['examples_per_s']:.0f} ex/s, " if amp else "no AMP on CPU, ")
          + f"resumed from step "
          f"{report['kill_and_resume']['resumed']['resumed_from']} to {args.steps}, final loss |diff| vs "
          f"uninterrupted {report['kill_and_resume']['final_loss_abs_diff']:.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
