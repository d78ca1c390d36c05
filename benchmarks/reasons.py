"""Reasons, checked (issue 36): how faithful each method's words are, on real validation positives.

  .venv/bin/python -m benchmarks.reasons --model DIR [--config configs/default.yaml] [--n 150] [--out DIR]

ERASER's comprehensiveness and sufficiency at k = 3 words and k = 20% (training.evaluation.faithfulness) of
occlusion (served) and integrated gradients (offline) against random words and a lexicon of the policy's train
positives, on `--n` validation positives per policy (a seeded sample); occlusion − lexicon with a paired bootstrap
95% CI; and the model-randomisation check (Spearman of occlusion contributions after re-initialising the top two
layers and the head). Prints a markdown table with the machine; writes faithfulness.json to `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import machine
from serving.policies import POLICIES
from serving.predictor import Predictor
from training.config import load_config
from training.evaluation.evaluate import load_split
from training.evaluation.faithfulness import RANKINGS, faithfulness, lexicon, model_randomisation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reasons")
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reports/faithfulness")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    predictor = Predictor.load(args.model)
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    train_labels, val_labels = np.asarray(train["labels"]), np.asarray(val["labels"])
    rng = np.random.default_rng(args.seed)
    report = {"model": str(args.model), "machine": machine(), "n_per_policy": args.n, "policies": {}}
    t0 = time.monotonic()
    for j, policy in enumerate(POLICIES):
        pos = np.flatnonzero(val_labels[:, j] == 1)
        texts = [val["text"][int(i)] for i in rng.choice(pos, min(args.n, len(pos)), replace=False)]
        counts = lexicon([train["text"][int(i)] for i in np.flatnonzero(train_labels[:, j] == 1)])
        report["policies"][policy] = faithfulness(predictor, texts, policy, counts, seed=args.seed).summary()
    report["randomisation_spearman"] = model_randomisation(
        predictor, [val["text"][int(i)] for i in rng.choice(len(val), 100, replace=False)])
    report["seconds"] = time.monotonic() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faithfulness.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    m = report["machine"]
    print(f"model {args.model}; {m['cpu']}, {m['cores']} cores ({m['torch_capability']}); {args.n} validation "
          f"positives per policy; {report['seconds']:.0f} s\n")
    print("| policy | measure | occlusion | integrated gradients | random | lexicon | occlusion − lexicon [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    for policy, s in report["policies"].items():
        for m in s["means"]["occlusion"]:
            d = s["occlusion_minus_lexicon"][m]
            print(f"| {policy} | {m} | " + " | ".join(f"{s['means'][r][m]:.3f}" for r in RANKINGS)
                  + f" | {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] |")
    print(f"\nmodel randomisation (top 2 layers + head re-initialised), Spearman of occlusion contributions: "
          + ", ".join(f"{p} {v:.3f}" for p, v in report["randomisation_spearman"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
