"""`tweetguard evaluate`: score a model on a split and report what a moderation team needs to trust it.

    tweetguard evaluate --model models:/tweetguard@champion [--config configs/default.yaml] [--split test]

Scores go through the serving path (`training.scorer`: the Predictor, or the TF-IDF baseline's own scorer),
every metric through `training.metrics` at the card's thresholds. The model's files are only read. Output: a
report directory (`metrics.json`, `report.md`, PNGs) and an MLflow evaluation run tagged with the model's
registry version and training run id. Notebooks call `compute_report` / the plots; the logic lives here.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.artifact import ACTIONS, PolicyCard, action_of
from serving.policies import POLICIES, UNKNOWN
from training.config import Config, EvalConfig
from training.data.identity import load_term_lists, slice_masks
from training.data.prepare import prepare
from training.evaluation import plots
from training.evaluation.behaviour import behaviour_metrics, run_suite
from training.evaluation.bias import bias_slices, worst_slices
from training.evaluation.cards import attach_model_card
from training.evaluation.published import benchmark_value, run_benchmarks
from training.evaluation.render import card_tiers, render_markdown
from training.fit.baseline import MODEL_FILE as BASELINE_FILE
from training.fit.baseline import Baseline
from training.metrics import bootstrap_ci, ece_per_policy, masked_metrics, precision_at
from training.scorer import Scored, Scorer, score_split
from training.tracking.refs import resolve_model_ref
from training.tracking.runs import DATASET_CONTEXT, Run, dataset_entity, dataset_ref, resolve_uri
from training.tracking.versions import ModelIdentity, identify, logged_model_id, set_version_tags

REPORT_JSON, REPORT_MD = "metrics.json", "report.md"


def model_kind(model_dir: str | Path) -> str:
    """Read from the directory's contents (the baseline's joblib file), never from a name."""
    return "tfidf" if (Path(model_dir) / BASELINE_FILE).is_file() else "transformer"


def load_scorer(model_dir: str | Path, batch_size: int = 64) -> Scorer:
    """The model in `model_dir` as a Scorer: the TF-IDF baseline, or the serving Predictor."""
    if model_kind(model_dir) == "tfidf":
        return Baseline.load(model_dir)
    from serving.predictor import Predictor  # torch: imported only when a transformer is scored

    return Predictor.load(model_dir, batch_size=batch_size)


def precision_at_prevalence(labels: np.ndarray, probs: np.ndarray, thresholds: dict[str, float],
                            prevalence: float) -> dict[str, dict[str, float]]:
    """Per policy: precision / recall at the card's threshold if positives were `prevalence` of traffic.
    precision_pi = pi*TPR / (pi*TPR + (1-pi)*FPR) (`metrics.precision_at`; 0 when nothing is flagged): TPR and
    FPR do not depend on the class mix, precision does.
    Sources are 15-80% abusive; real traffic is a few %, where the same threshold flags far more false alarms.
    """
    out = {}
    for j, policy in enumerate(POLICIES):
        known = labels[:, j] != UNKNOWN
        y, flag = labels[known, j] == 1, probs[known, j] >= thresholds[policy]
        if not 0 < y.sum() < len(y):
            continue
        tpr, fpr = (flag & y).sum() / y.sum(), (flag & ~y).sum() / (~y).sum()
        out[policy] = {"prevalence": prevalence, "recall": float(tpr), "false_positive_rate": float(fpr),
                       "precision": float(precision_at(prevalence, tpr, fpr)),
                       "precision_on_split": float((flag & y).sum() / max(flag.sum(), 1))}
    return out


def tier_report(labels: np.ndarray, probs: np.ndarray, card: PolicyCard, n_boot: int, seed: int) -> dict:
    """{policy: {tier: {"card": the card's Tier (target, prevalence, threshold, validation precision / recall,
    note), and where the tier is on: this split's precision / recall at its threshold (at the tier's prevalence,
    if it assumed one) with 95% bootstrap CIs, and the rows it acts on}}} for every tier of the card (v1: {})."""
    out = card_tiers(card)
    groups: dict[tuple[str, float | None], dict[str, float]] = {}  # (tier, prevalence) -> enabled thresholds
    for policy, tiers in out.items():
        for name, entry in tiers.items():
            if entry["card"]["threshold"] is not None:
                groups.setdefault((name, entry["card"]["prevalence"]), {})[policy] = entry["card"]["threshold"]
    for (name, prevalence), thresholds in groups.items():
        metrics = masked_metrics(labels, probs, thresholds, prevalence)
        ci = bootstrap_ci(labels, probs, n=n_boot, seed=seed, thresholds=thresholds, prevalence=prevalence)
        key = "precision" if prevalence is None else "precision_at_prevalence"
        for policy, threshold in thresholds.items():
            entry, j = out[policy][name], POLICIES.index(policy)
            for metric, src in (("precision", f"{policy}/{key}"), ("recall", f"{policy}/recall")):
                if src in metrics:
                    entry[metric] = metrics[src]
                    entry[f"{metric}_ci"] = [round(v, 6) for v in ci[src]] if src in ci else None
            entry["flagged"] = int((probs[labels[:, j] != UNKNOWN, j] >= threshold).sum())  # known-label rows
    return out


def queue_report(scored: Scored, card: PolicyCard) -> dict[str, dict]:
    """What the card's tiers would act on, whatever the labels: per source and over all rows ("all"), the share
    of rows whose most severe action on any policy is `review` or `remove` (`queued`: what a review team sees,
    plus what is removed) and `remove`, and per policy. Actions come from `serving.artifact.action_of`, the
    service's rule. A v1 card (no tiers) acts on nothing."""
    tiers = card.tier_thresholds
    rank = {a: i for i, a in enumerate(ACTIONS)}
    level = np.array([[rank[action_of(float(s), tiers[p])] for p, s in zip(POLICIES, row, strict=True)]
                      for row in scored.probs], dtype=np.int64).reshape(len(scored.probs), len(POLICIES))

    def shares(sel: np.ndarray) -> dict:
        n, worst = int(sel.sum()), level[sel].max(axis=1, initial=0)
        out = {"rows": n, "queued": float((worst >= rank["review"]).mean()) if n else float("nan"),
               "remove": float((worst == rank["remove"]).mean()) if n else float("nan")}
        for j, p in enumerate(POLICIES):
            out[f"{p}/queued"] = float((level[sel, j] >= rank["review"]).mean()) if n else float("nan")
        return out

    out = {"all": shares(np.ones(len(level), dtype=bool))}
    out.update({source: shares(scored.sources == source) for source in sorted(set(scored.sources.tolist()))})
    return out


def top_errors(scored: Scored, k: int) -> dict[str, dict[str, list[dict]]]:
    """Per policy: the k most confident false positives (negatives scored highest) and false negatives."""
    out = {}
    for j, policy in enumerate(POLICIES):
        known = np.flatnonzero(scored.labels[:, j] != UNKNOWN)
        p, y = scored.probs[known, j], scored.labels[known, j] == 1

        def rows(idx):
            return [{"text": scored.texts[i], "source": str(scored.sources[i]), "id": scored.ids[i],
                     "score": float(scored.probs[i, j])} for i in idx]

        neg, pos = known[~y], known[y]
        out[policy] = {"false_positives": rows(neg[np.argsort(-p[~y], kind="stable")][:k]),
                       "false_negatives": rows(pos[np.argsort(p[y], kind="stable")][:k])}
    return out


def _ci_json(ci: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    return {k: [round(lo, 6), round(hi, 6)] for k, (lo, hi) in sorted(ci.items())}


def compute_report(scored: Scored, card: PolicyCard, ecfg: EvalConfig, data_root: str | None = None,
                   prevalence: float | None = None) -> dict:
    """Every number of the evaluation report, JSON-serializable (numbers only computed here). Precision is also
    reported at `prevalence` (`evaluation.report_prevalence`, else the deployment prevalence, else 0.03)."""
    thr = card.thresholds
    labels, probs = scored.labels, scored.probs
    per_source, per_source_ci = {}, {}
    for source in sorted(set(scored.sources.tolist())):
        sel = scored.sources == source
        per_source[source] = masked_metrics(labels[sel], probs[sel], thr)
        per_source_ci[source] = _ci_json(bootstrap_ci(labels[sel], probs[sel], n=ecfg.bootstrap_samples,
                                                      seed=ecfg.seed, thresholds=thr))
    before, after = ece_per_policy(labels, scored.raw_probs), ece_per_policy(labels, probs)
    terms = load_term_lists(ecfg.identity_terms)
    bias = bias_slices(labels, probs, slice_masks(scored.texts, terms), ecfg.min_slice_support)
    return {
        "rows": len(labels),
        "thresholds": thr,
        "threshold_methods": {p.name: p.threshold_method for p in card.policies},
        "calibration_methods": {p.name: p.calibration.method for p in card.policies},
        "overall": masked_metrics(labels, probs, thr),
        "overall_ci": _ci_json(bootstrap_ci(labels, probs, n=ecfg.bootstrap_samples, seed=ecfg.seed,
                                            thresholds=thr)),
        "per_source": per_source,
        "per_source_ci": per_source_ci,
        "at_prevalence": precision_at_prevalence(labels, probs, thr, ecfg.report_prevalence or prevalence or 0.03),
        "tiers": tier_report(labels, probs, card, ecfg.bootstrap_samples, ecfg.seed),
        "queue": queue_report(scored, card),
        "ece": {p: {"uncalibrated": before[p], "calibrated": after[p]} for p in POLICIES},
        "benchmarks": run_benchmarks(scored, thr, data_root=data_root, n_boot=ecfg.bootstrap_samples,
                                     seed=ecfg.seed, slur_swear_terms=ecfg.slur_swear_terms),
        "bias": bias,
        "bias_worst": worst_slices(bias),
        "min_slice_support": ecfg.min_slice_support,
        "errors": top_errors(scored, ecfg.top_errors),
    }


def flat_metrics(report: dict, split: str) -> dict[str, float]:
    """The report's headline numbers as MLflow metrics (finite values only)."""
    out = {f"{split}/{k}": v for k, v in report["overall"].items()}
    for source, metrics in report["per_source"].items():
        out.update({f"{split}/{source}/{k}": v for k, v in metrics.items()})
    for policy, ece in report["ece"].items():
        out.update({f"{split}/{policy}/ece_uncalibrated": ece["uncalibrated"]})
    for policy, m in report["at_prevalence"].items():
        out[f"{split}/{policy}/precision_at_{m['prevalence']:g}"] = m["precision"]
    for policy, tiers in report.get("tiers", {}).items():
        for name, t in tiers.items():
            out.update({f"{split}/{policy}/{name}/{k}": t[k] for k in ("precision", "recall") if k in t})
    for source, q in report.get("queue", {}).items():
        out.update({f"{split}/queue/{source}/{k}": v for k, v in q.items() if k != "rows"})
    for b in report["benchmarks"]:
        metric, value = benchmark_value(b)
        key = f"benchmark/{re.sub(r'[^a-z0-9]+', '_', b['benchmark'].lower()).strip('_')}"
        out[f"{key}/{metric}"] = value  # None (a goal measure not in this data): not logged
        if b.get("goal") and b["n"]:
            out[f"{key}/n"] = b["n"]  # goal measures: the rows (slice size) beside the value
    if report.get("behaviour"):
        out.update(behaviour_metrics(report["behaviour"]))
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and np.isfinite(v)}


def write_figures(report: dict, scored: Scored, card: PolicyCard, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt


    figures = {
        "pr_roc.png": plots.pr_roc_curves(scored.labels, scored.probs),
        "reliability.png": plots.reliability(scored.labels, scored.raw_probs, scored.probs, ece=report["ece"]),
        "confusion.png": plots.confusion_matrices(scored.labels, scored.probs, card.thresholds),
        **{f"slices_{p}.png": plots.slice_auc_bars(report["bias"], p) for p in POLICIES},
    }
    paths = []
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


@dataclass
class EvalResult:
    report: dict
    out_dir: Path
    run_id: str | None
    identity: ModelIdentity
    kind: str
    scored: Scored  # per-row scores, for notebooks that plot or compare beyond the report
    train_sources: tuple[str, ...] = ()  # the sources the model was trained on (its card), for comparisons


def load_split(cfg: Config, split: str):
    dataset = prepare(cfg.data).dataset
    if split not in dataset:
        raise ValueError(f"--split {split!r}: the prepared data has splits {list(dataset)}")
    return dataset[split]


def evaluate(ref: str, cfg: Config, *, split: str | None = None, out_dir: str | Path | None = None,
             tracking_uri: str | None = None, data=None, log_to_mlflow: bool = True) -> EvalResult:
    """Resolve `ref`, score `split` (or the given `data` split), write the report, log the evaluation run."""
    split = split or cfg.evaluation.split
    uri = resolve_uri(tracking_uri or cfg.tracking.uri)
    model_dir = resolve_model_ref(ref, tracking_uri=uri)
    scorer = load_scorer(model_dir, batch_size=cfg.evaluation.batch_size)
    identity = identify(ref, uri, scorer.card.mlflow_run_id)
    data = load_split(cfg, split) if data is None else data
    scored = score_split(scorer, data)
    report = compute_report(scored, scorer.card, cfg.evaluation, data_root=cfg.data.root,
                            prevalence=cfg.calibration.deployment_prevalence)
    # Scored apart from the split (its texts are not in it) through the same scorer and thresholds.
    report["behaviour"] = run_suite(scorer, cfg.evaluation.behaviour_suite) if cfg.evaluation.behaviour_suite else None
    report["model"] = {**identity.tags(), "kind": model_kind(model_dir), "model_name": scorer.card.model_name,
                       "backbone": scorer.card.backbone, "split": split}
    name = identity.label.replace(" ", "-") if identity.version else Path(str(model_dir)).name
    out = Path(out_dir) if out_dir else Path(cfg.evaluation.output_dir) / f"{name}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1, default=float) + "\n", encoding="utf-8")
    (out / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    files = [out / REPORT_JSON, out / REPORT_MD, *write_figures(report, scored, scorer.card, out)]
    run_id = log_evaluation(report, files, identity, cfg, uri, split, rows_digest(scored)) if log_to_mlflow else None
    if run_id and identity.version and split == "test":  # the version's model card gains the test numbers
        attach_model_card(identity.name, identity.version, model_dir, tracking_uri=uri, evaluation=report)
    return EvalResult(report, out, run_id, identity, report["model"]["kind"], scored,
                      tuple(src.name for src in scorer.card.sources))


def rows_digest(scored: Scored) -> str:
    """What was scored, as a dataset digest: the rows' ids and labels, in order."""
    h = hashlib.sha256("\n".join(map(str, scored.ids)).encode("utf-8"))
    h.update(np.ascontiguousarray(scored.labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def log_evaluation(report: dict, files: list[Path], identity, cfg: Config, uri: str, split: str,
                   digest: str) -> str:
    """An evaluation run in the training experiment, tagged with (linked to) the model's version and run. For a
    version that is an MLflow 3 logged model, the run takes the model and the scored split (`digest`) as inputs and
    its metrics are the model's too (`MlflowClient().get_logged_model(model_id).metrics`)."""
    tags = {**identity.tags(), "tweetguard.run_type": "evaluation", "split": split,
            "model_kind": report["model"]["kind"]}
    if identity.run_id:
        tags["mlflow.note.content"] = f"Evaluation of {identity.label} (training run {identity.run_id}) on {split}"
    with Run.start(uri, cfg.tracking.experiment, f"evaluate {identity.label} {split}", tags,
                   system_metrics=False) as run:
        run.log_params({"model_ref": identity.ref, "split": split, "rows": report["rows"],
                        **{f"evaluation.{k}": v for k, v in cfg.evaluation.model_dump().items()}})
        model_id = logged_model_id(identity.name, identity.version, uri) if identity.version else None
        dataset = dataset_ref(split, digest)
        run.log_inputs([(dataset_entity(*dataset, cfg.data.root), {DATASET_CONTEXT: split, "rows": str(report["rows"]),
                                                                   "digest": digest})], model_id=model_id)
        run.log_metrics(flat_metrics(report, split), 0, model_id=model_id, dataset=dataset)
        for path in files:
            run.log_artifact_file(path, "report")
    if identity.version:  # the other direction of the link: the version knows its latest evaluation
        set_version_tags(identity.name, identity.version, {f"evaluation.{split}.run_id": run.run_id}, uri)
    return run.run_id
