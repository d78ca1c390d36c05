"""GPU training check that runs on a bare CUDA machine: torch and transformers only (no mlflow, no datasets, no
../shared), Python 3.11+.

    python benchmarks/gpu_check.py                      # auto: cuda if torch sees one; ~300 steps per precision
    python benchmarks/gpu_check.py --device cpu --steps 5 --texts 256   # what the test suite runs

The model is tweetguard's mean-pooling head (`serving/tweetguard_bert.py`, itself torch + transformers only) at
the bundled backbone's shape (BERT MiniLM-L6: 6 layers, 384 hidden, 12 heads, 1,536 FFN, 30,522 vocab), randomly
initialised. The texts are synthetic token-id sequences with tweet-like lengths (8-64 tokens) and multi-label
targets with unknown labels masked, generated from a seed: this is a check of the mechanics and speed of training
on the device (fp32, and mixed precision as `train.amp` picks it: bf16 where supported, else fp16 with a gradient
scaler), not of quality, and the project's datasets never leave ../shared.

Phases, reported as JSON and a summary line: fp32 steps, AMP steps (CUDA only; examples/s after a warm-up, the
GPU synchronised), then a kill: a child process trains with checkpoints, is SIGKILLed after its first one, and a
second child resumes from that checkpoint to the end; the resumed run must reach the last step, and its final
loss is compared with the fp32 phase's, the same run uninterrupted (equal on CPU; close on a GPU, whose kernels
need not be deterministic).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: serving/ is importable

from serving.tweetguard_bert import BertMeanPoolForMultiLabel, TweetGuardBertConfig  # noqa: E402

SHAPE = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
             max_position_embeddings=512)
POLICIES = 3


def synthetic(n: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 65, (n,), generator=g)
    texts = [torch.randint(1000, SHAPE["vocab_size"], (int(k),), generator=g) for k in lengths]
    labels = torch.randint(0, 2, (n, POLICIES), generator=g)
    labels[torch.rand(n, POLICIES, generator=g) < 0.4] = -1  # unknown: masked out of the loss
    return texts, labels


def batch_of(texts, labels, idx, device) -> dict[str, torch.Tensor]:
    width = max(len(texts[i]) for i in idx)
    ids = torch.zeros(len(idx), width, dtype=torch.long)
    mask = torch.zeros(len(idx), width, dtype=torch.long)
    for row, i in enumerate(idx):
        ids[row, :len(texts[i])], mask[row, :len(texts[i])] = texts[i], 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels[idx]}
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    known = labels >= 0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0).float(),
                                                                reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


def train(args, device: torch.device, amp: bool, steps: int, ckpt: Path | None = None, resume: bool = False) -> dict:
    """`steps` optimizer steps of batch `args.batch`; returns examples/s (after warm-up), final loss, precision."""
    torch.manual_seed(args.seed)
    texts, labels = synthetic(args.texts, args.seed)
    model = BertMeanPoolForMultiLabel(TweetGuardBertConfig(**SHAPE, num_labels=POLICIES)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    dtype = None
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    start = 0
    if resume and ckpt and (ckpt / "state.pt").is_file():
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(args.seed))
    warm, t0, loss = min(args.warmup, max(steps - start - 1, 0)), None, float("nan")
    for step in range(start, steps):
        if step - start == warm:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        idx = [int(order[(step * args.batch + j) % len(texts)]) for j in range(args.batch)]
        batch = batch_of(texts, labels, idx, device)
        y = batch.pop("labels")
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            value = masked_bce(model(**batch).logits, y)
        (value if scaler is None else scaler.scale(value)).backward()
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        opt.zero_grad(set_to_none=True)
        loss = float(value)
        if ckpt and (step + 1) % args.checkpoint_every == 0:
            tmp = ckpt / "state.pt.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state(),
                        "step": step + 1}, tmp)
            os.replace(tmp, ckpt / "state.pt")  # atomic: a kill never leaves half a checkpoint
            print(json.dumps({"checkpoint": step + 1}), flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    timed = steps - start - warm
    rate = timed * args.batch / (time.perf_counter() - t0) if t0 is not None and timed > 0 else float("nan")
    return {"steps": steps, "resumed_from": start, "examples_per_s": rate, "final_loss": loss,
            "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]}


def kill_and_resume(args, device: torch.device, uninterrupted_loss: float) -> dict:
    """Child 1 trains with checkpoints and is SIGKILLed after its first; child 2 resumes to the end; its final loss
    is compared with the fp32 phase's (the same run, uninterrupted)."""
    ckpt = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    base = [sys.executable, __file__, "--child", "--device", str(device), "--steps", str(args.steps),
            "--texts", str(args.texts), "--batch", str(args.batch), "--seed", str(args.seed),
            "--checkpoint-every", str(args.checkpoint_every), "--ckpt", str(ckpt)]
    child = subprocess.Popen(base, stdout=subprocess.PIPE, text=True)
    for line in child.stdout:  # the first checkpoint is on disk: kill mid-run
        if '"checkpoint"' in line:
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    killed_at = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)["step"]
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
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if args.child:  # a kill-and-resume leg: fp32, prints its result as the last line
        print(json.dumps(train(args, device, amp=False, steps=args.steps, ckpt=args.ckpt, resume=args.resume)))
        return 0
    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                          "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                          "cpu": platform.processor() or platform.machine()},
              "settings": {k: v for k, v in vars(args).items() if k not in ("child", "resume", "ckpt")}}
    report["fp32"] = train(args, device, amp=False, steps=args.steps)
    # AMP is CUDA only (train.amp); on CPU it would repeat the fp32 run.
    report["amp"] = train(args, device, amp=True, steps=args.steps) if device.type == "cuda" else None
    report["kill_and_resume"] = kill_and_resume(args, device, report["fp32"]["final_loss"])
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
