"""Simulated reviewers: does choosing what to label pay off here? (notebooks/labelling_loop.ipynb)

The champion scores a pool of texts from a source it never trained on. For each strategy and label budget, the
texts `tweetguard sample` picks (training.release.sample, the same code) are answered by that source's own labels
— the simulated reviewers, for the policies it labels — and frozen into a feedback snapshot. The champion is then
continued on that feedback alone (`train.init_from`, `data.include=[feedback]`, `data.feedback` = the snapshot:
the real feedback source, split by time; registered as `tweetguard-simulated-loop`, never as a candidate) and both
models are scored on the source's held-out carve. Equal budgets
make the strategies comparable; several seeds make a difference readable against the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from serving.policies import POLICIES
from training.config import Config
from serving.decisions import text_sha256
from training.data.feedback import utc_iso, write_snapshot
from training.metrics import masked_metrics
from training.data.sampling import sample

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class Arm:
    strategy: str
    budget: int
    seed: int
    positives: dict[str, int]  # labelled positives per policy among the sampled texts
    metrics: dict[str, float]  # the continued model on the carve


def reviewer_rows(texts: list[str], labels: np.ndarray, chosen: list[int]) -> list[dict]:
    """Verdicts of the simulated reviewer: the source's own labels (unknown: the policy is not answered), in the
    order sampled (a second apart, so the feedback source's time split follows the sample's order)."""
    rows = []
    for rank, i in enumerate(chosen):
        answers = {p: bool(labels[i, j]) for j, p in enumerate(POLICIES) if labels[i, j] >= 0}
        if answers:
            rows.append({"text": texts[i], "text_sha256": text_sha256(texts[i]), "labels": answers,
                         "reviewer": "simulated:gold", "labelled_at": utc_iso(T0 + timedelta(seconds=rank)),
                         "blind": True, "origin": "simulated", "item": str(i), "verdict": str(i)})
    return rows


def carve_metrics(predictor, texts: list[str], labels: np.ndarray) -> dict[str, float]:
    return masked_metrics(labels, predictor.predict_proba(texts), predictor.card.thresholds)


def simulate(cfg: Config, champion_dir: Path, pool: tuple[list[str], np.ndarray],
             carve: tuple[list[str], np.ndarray], *, budgets: list[int], strategies: list[str], seeds: list[int],
             out_dir: Path, epochs: int = 2) -> tuple[dict[str, float], list[Arm]]:
    """(the champion's metrics on the carve, one Arm per seed x strategy x budget); see the module."""
    from serving.predictor import Predictor
    from training.pipeline.train import train

    texts, labels = pool
    predictor = Predictor.load(champion_dir, batch_size=cfg.evaluation.batch_size)
    probs = predictor.predict_proba(texts)
    before = carve_metrics(predictor, *carve)
    arms = []
    for seed in seeds:
        for strategy in strategies:
            for budget in budgets:
                chosen = [c["index"] for c in sample(texts, probs, predictor.card.thresholds, n=budget,
                                                     strategy=strategy, seed=seed).rows]
                rows = reviewer_rows(texts, labels, chosen)
                name = f"{strategy}-{budget}-s{seed}"
                snapshot = write_snapshot(rows, out_dir / name / "snapshots", origin="simulated", source=name)
                run_cfg = cfg.model_copy(deep=True)
                run_cfg.run_name = f"simulate-{name}"
                run_cfg.data.include = ["feedback"]
                # The main mix's per-source training rules name sources this feedback-only run does not have.
                run_cfg.train.label_weights, run_cfg.train.uncertain_negatives = {}, {}
                run_cfg.data.feedback = str(snapshot.path.parent)
                run_cfg.train.init_from = str(champion_dir)
                run_cfg.train.epochs = epochs
                run_cfg.train.max_steps = None
                run_cfg.train.seed = seed
                run_cfg.train.output_dir = str(out_dir / name / "runs")
                run_cfg.tracking.experiment = "tweetguard-simulated-loop"  # never the real registry's versions
                run_cfg.tracking.registered_model = "tweetguard-simulated-loop"
                result = train(run_cfg, progress_bar=False)
                positives = {p: int((labels[chosen, j] == 1).sum()) for j, p in enumerate(POLICIES)}
                arms.append(Arm(strategy, budget, seed, positives,
                                carve_metrics(Predictor.load(result.artifact_dir,
                                                             batch_size=cfg.evaluation.batch_size), *carve)))
    return before, arms


def table(before: dict[str, float], arms: list[Arm], metric: str = "pr_auc") -> tuple[list[str], list[list[str]]]:
    """(header, rows): per strategy and budget, the mean over seeds of each judged policy's carve metric, its
    change from the champion, and the positives the sample held."""
    policies = [p for p in POLICIES if f"{p}/{metric}" in before]
    header = ["strategy", "budget", "seeds"] + [f"{p} {metric} (Δ)" for p in policies] + \
        [f"{p} positives sampled" for p in policies]
    rows = [["champion (before)", "", ""] + [f"{before[f'{p}/{metric}']:.3f}" for p in policies] + [""] * len(policies)]
    for strategy, budget in dict.fromkeys((a.strategy, a.budget) for a in arms):
        group = [a for a in arms if (a.strategy, a.budget) == (strategy, budget)]
        cells = []
        for p in policies:
            values = [a.metrics.get(f"{p}/{metric}", float("nan")) for a in group]
            mean = float(np.mean(values))
            cells.append(f"{mean:.3f} ({mean - before[f'{p}/{metric}']:+.3f})")
        rows.append([strategy, str(budget), str(len(group))] + cells +
                    [f"{np.mean([a.positives[p] for a in group]):.0f}" for p in policies])
    return header, rows
