"""Training speed: our loop (`tweetguard train`) vs a stock `transformers.Trainer`, in one process.

    python -m benchmarks.train_speed [--config configs/default.yaml] [--steps 60] [--warmup 5] [--rounds 1]
                                     [--json OUT] [key.sub=value ...]

Same backbone and head (`serving.modeling.build_model`), same train rows (a seeded sample of the prepared
train split), same batch size, max length, optimizer settings, masked loss and torch threads. The stock side is
what a careful user writes: `Trainer` + `DataCollatorWithPadding` (pads each batch to its longest text) with
`train_sampling_strategy="group_by_length"` (the headline baseline), and the same with the default random batches;
the masked BCE passed as `compute_loss_func`. Ours has length-grouped batches (`train.length_group`). All are
timed over the steps after `--warmup`; rounds alternate the sides so drift in the machine hits both.
Prints examples/s, the ratio, and the padding each side paid (real tokens / padded tokens).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _sample(cfg, tokenizer, n: int):
    from training.fit.batches import encode
    from training.fit.command import load_data

    train = load_data(cfg, progress=False).dataset["train"]
    rows = train.shuffle(seed=cfg.train.seed).select(range(min(n, len(train))))
    return encode(rows, tokenizer, cfg.model.max_length)


def run_ours(cfg, backbone: str, tokenizer, data, steps: int, warmup: int) -> dict:
    from serving.modeling import build_model
    from training.fit.batches import epoch_batches, pos_weights
    from training.fit.checkpoint import seed_everything
    from training.fit.loop import TrainingLoop

    seed_everything(cfg.train.seed)
    model = build_model(backbone, cfg.model.head)
    tc = cfg.train.model_copy(update={"max_steps": warmup + steps, "eval_every_steps": None, "max_minutes": None,
                                      "early_stopping_patience": None, "checkpoint_every_steps": 10**9,
                                      "log_every_steps": 1, "epochs": 1})
    stamps: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny_val = type(data)(data.input_ids[:8], data.labels[:8], data.sources[:8])
        loop = TrainingLoop(model, data, tiny_val, tc, Path(tmp), pad_id=tokenizer.pad_token_id or 0,
                            pos_weight=pos_weights(cfg.train, data.labels),
                            log=lambda m, s: stamps.setdefault(s, time.monotonic()),
                            progress_bar=False)
        loop.fit()
    lengths = np.array([len(x) for x in data.input_ids])
    batches = epoch_batches(lengths, seed=tc.seed, epoch=0, batch_size=tc.batch_size, group=tc.length_group,
                            alpha=tc.source_balance, sources=data.sources)[warmup:warmup + steps]
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return {"examples_per_s": steps * tc.batch_size / (stamps[warmup + steps] - stamps[warmup]),
            "token_efficiency": real / padded}


def run_stock(cfg, backbone: str, tokenizer, data, steps: int, warmup: int, sampling: str = "random") -> dict:
    """`sampling`: the Trainer's `train_sampling_strategy` ("random", or "group_by_length": what a careful user
    turns on for variable-length text, with the lengths precomputed in a `length` column)."""
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from serving.modeling import build_model
    from training.fit.batches import masked_bce, pos_weights
    from training.fit.checkpoint import seed_everything

    seed_everything(cfg.train.seed)
    model = build_model(backbone, cfg.model.head)
    tc = cfg.train
    pos_weight = torch.tensor(pos_weights(cfg.train, data.labels), dtype=torch.float32)
    ds = datasets.Dataset.from_dict({"input_ids": data.input_ids, "labels": data.labels.astype(np.float32).tolist(),
                                     "length": [len(x) for x in data.input_ids]})
    pad = DataCollatorWithPadding(tokenizer)
    seen = {"real": 0, "padded": 0}

    def collate(features):
        batch = pad([{k: v for k, v in f.items() if k != "length"} for f in features])
        seen["real"] += int(batch["attention_mask"].sum())
        seen["padded"] += batch["attention_mask"].numel()
        return batch

    stamps: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps[state.global_step] = time.monotonic()
            if state.global_step == warmup:  # count padding over the timed steps only
                seen.update(real=0, padded=0)

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=tc.batch_size, max_steps=warmup + steps,
            learning_rate=tc.lr, weight_decay=tc.weight_decay, warmup_steps=tc.warmup_ratio,
            max_grad_norm=tc.max_grad_norm, seed=tc.seed, use_cpu=True, report_to="none", save_strategy="no",
            logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, train_sampling_strategy=sampling,
            remove_unused_columns=False,  # our head's forward() takes no `labels`: keep them for the loss
        )
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collate, callbacks=[Clock()],
                          compute_loss_func=lambda out, labels, num_items_in_batch=None:
                          masked_bce(out.logits, labels, pos_weight))
        trainer.train()
    return {"examples_per_s": steps * tc.batch_size / (stamps[warmup + steps] - stamps[warmup]),
            "token_efficiency": seen["real"] / max(seen["padded"], 1)}


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per side and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=1, help="stock/ours pairs; the median ratio is reported")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from benchmarks.measure import machine
    from serving.backbone import resolve_backbone
    from training.config import load_config
    from training.fit.command import setup

    cfg = load_config(args.config, args.overrides)
    setup(cfg)
    backbone = resolve_backbone(cfg.model.backbone)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    data = _sample(cfg, tokenizer, (args.warmup + args.steps) * cfg.train.batch_size * 2)
    lengths = [len(x) for x in data.input_ids]
    print(f"train rows sampled: {len(data)}; tokens per text mean {np.mean(lengths):.1f}, p50 "
          f"{np.median(lengths):.0f}, p95 {np.percentile(lengths, 95):.0f}, max {max(lengths)} "
          f"(max_length {cfg.model.max_length}); batch {cfg.train.batch_size}; threads {cfg.train.num_threads}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per side", file=sys.stderr)
    rounds = []
    for r in range(args.rounds):
        grouped = run_stock(cfg, backbone, tokenizer, data, args.steps, args.warmup, sampling="group_by_length")
        stock = run_stock(cfg, backbone, tokenizer, data, args.steps, args.warmup)
        ours = run_ours(cfg, backbone, tokenizer, data, args.steps, args.warmup)
        rounds.append({"stock_grouped": grouped, "stock": stock, "ours": ours,
                       "ratio": ours["examples_per_s"] / grouped["examples_per_s"],
                       "ratio_vs_random": ours["examples_per_s"] / stock["examples_per_s"]})
        print(f"round {r + 1}: stock Trainer, group_by_length {grouped['examples_per_s']:.1f} ex/s (token efficiency "
              f"{grouped['token_efficiency']:.2f}) | stock Trainer, random {stock['examples_per_s']:.1f} ex/s "
              f"({stock['token_efficiency']:.2f}) | ours {ours['examples_per_s']:.1f} ex/s "
              f"({ours['token_efficiency']:.2f}) | ours / grouped {rounds[-1]['ratio']:.2f}x, ours / random "
              f"{rounds[-1]['ratio_vs_random']:.2f}x", file=sys.stderr)
    result = {"config": args.config, "steps": args.steps, "warmup": args.warmup, "batch_size": cfg.train.batch_size,
              "max_length": cfg.model.max_length, "threads": cfg.train.num_threads, "machine": machine(),
              "rounds": rounds, "median_ratio": statistics.median(r["ratio"] for r in rounds),
              "median_ratio_vs_random": statistics.median(r["ratio_vs_random"] for r in rounds)}
    print(f"training speed on {result['machine']['cpu']}: ours vs a stock transformers.Trainer with "
          f"group_by_length {result['median_ratio']:.2f}x (the headline); vs its default random batches "
          f"{result['median_ratio_vs_random']:.2f}x (median of {args.rounds} round(s))")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
