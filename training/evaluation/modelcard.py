"""A short model card per registered version: intended use, data and licenses, metrics, calibration, tiers, known
limits, how to get calibrated scores.

`model_card_markdown(card)` renders it from the policy card (and a `tweetguard evaluate` report of the test split,
when given); it writes nothing. `training.evaluation.hubcard` puts the same text under the Hugging Face Hub's front
matter, and `training.evaluation.cards.attach_model_card` writes both to the registry and the version's run.
"""

from __future__ import annotations

from serving.artifact import PolicyCard
from serving.policies import DESCRIPTIONS, POLICIES
from training.data.sources import is_non_commercial, is_research_only
from training.evaluation.render import card_tiers, fmt, tier_table


def model_card_markdown(card: PolicyCard, *, name: str | None = None, version: str | None = None,
                        evaluation: dict | None = None) -> str:
    """The card's markdown; `evaluation` (a `tweetguard evaluate` report of the test split) adds the test
    PR-AUCs and each decision tier's test precision and recall (95% CIs) beside its validation target."""
    title = f"{name or card.model_name}" + (f" v{version}" if version else "")
    val = card.validation_metrics
    lines = [
        f"# Model card: {title}", "",
        "## Intended use",
        "Scores English tweets (and similar short social-media posts) for three moderation policies, to "
        "prioritise human review. Not for fully automatic removal, and not for judging people.", "",
        *[f"- **{p}**: {DESCRIPTIONS[p]}" for p in POLICIES], "",
        f"Backbone: {card.backbone or 'n/a'} ({card.head}); max {card.max_length} tokens; preprocessing "
        f"v{card.preprocess_version}; training run {card.mlflow_run_id or 'n/a'}; created {card.created}.", "",
        *_quantization_lines(card),
        "## Training data and licenses",
        *_non_commercial_lines(card),
        *_research_only_lines(card),
        "| source | license | content hash |", "|---|---|---|",
        *[f"| {s.name} | {s.license} | `{s.content_hash[:12]}` |" for s in card.sources],
        "" if card.sources else "_No sources recorded in the policy card._", "",
        "Check each license before redistributing the model; `unverified` / `none-stated` sources can be left "
        "out with `data.exclude_licenses`.", "",
        "## Metrics (validation; thresholds and calibration from the policy card)",
        "| policy | threshold | ROC-AUC | PR-AUC | F1 | ECE | how the threshold was chosen |",
        "|---|---|---|---|---|---|---|",
        *[f"| {p.name} | {p.threshold:.3f} | {fmt(val.get(f'{p.name}/roc_auc'))} | {fmt(val.get(f'{p.name}/pr_auc'))} "
          f"| {fmt(val.get(f'{p.name}/f1'))} | {fmt(val.get(f'{p.name}/ece'))} | {p.threshold_method} |"
          for p in card.policies], "",
        *_tier_lines(card, evaluation),
        *_calibration_lines(card),
    ]
    if evaluation:
        lines += ["Test (see the evaluation run for CIs, per-source numbers and bias slices): " + ", ".join(
            f"{p} PR-AUC {fmt(evaluation['overall'].get(f'{p}/pr_auc'))}" for p in POLICIES), ""]
    lines += [
        "## Known limits",
        "- English only; trained on tweets and a few forum/comment sources. Other languages, code-switching and "
        "long texts (truncated at the token limit) are out of scope.",
        "- Violence has thin tweet-level data (a few sources, some with weak negatives"
        + (f"; {int(val['violence/n_pos'])} positive validation labels" if "violence/n_pos" in val else "")
        + "): its scores are the least reliable, check the per-source metrics before relying on them.",
        "- Harassment labels come from OLID/SOLID targeting annotations (IND) and a few hate corpora: "
        "pile-ons, doxxing and context-dependent harassment are barely represented.",
        "- Source datasets are 15-80% abusive; real traffic is a few percent, so precision there is much lower "
        "than on the test sets (the evaluation report gives it at a stated prevalence).",
        "- Identity terms can raise scores on benign mentions; see the bias slices of the evaluation report.",
        "- Labels reflect the annotators of each dataset; dialects (e.g. AAE) are known to be over-flagged by "
        "such data.", "",
        *USAGE_LINES,
    ]
    return "\n".join(lines)


def _quantization_lines(card: PolicyCard) -> list[str]:
    q = card.quantization
    if q is None:
        return []
    return ["## Quantization",
            f"This model is the static int8 graph `{q.graph}` made from {q.source} ({q.note}; activation ranges "
            f"from {q.calibration_rows} train texts). Its scores, calibration, thresholds and tiers are the "
            "graph's, fit on validation as for any model; the Hugging Face weights beside it are the fp32 source "
            "model, which scores differently. The Predictor and the registered MLflow Model run the graph.", ""]


# How to get the numbers the tables above describe: the weights alone give uncalibrated logits.
USAGE_LINES = [
    "## Getting calibrated scores",
    ("The Hugging Face files alone (`AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)`) "
     "give one raw logit per policy (`config.id2label`): **uncalibrated**, and scored without the tweet normalization. "
     "The thresholds and tiers above apply to calibrated probabilities; get them from tweetguard's Predictor or the "
     "registered MLflow Model, which apply the normalization and this card's calibration:"), "",
    "```python",
    "from serving.predictor import Predictor",
    "Predictor.load(model_dir).predict([\"some tweet\"])  # scores, flags and actions per policy",
    "",
    "import mlflow, pandas as pd",
    "mlflow.pyfunc.load_model(\"models:/tweetguard@champion\").predict(pd.DataFrame({\"text\": [\"some tweet\"]}))",
    "```", "",
]


def _calibration_lines(card: PolicyCard) -> list[str]:
    val = card.validation_metrics
    return ["## Calibration (fit on validation)",
            ("Per policy, the raw logit z becomes a probability by the card's method (`platt`: sigmoid(z / T + b); "
             "`temperature`: sigmoid(z / T); `isotonic`: a monotone map of sigmoid(z); `none`: sigmoid(z)). ECE after "
             "calibration is measured on the rows it was fit on (optimistic); `tweetguard evaluate` reports it on test."),
            "", "| policy | method | T | b | ECE before | ECE after |", "|---|---|---|---|---|---|",
            *[f"| {p.name} | {p.calibration.method} | {p.calibration.temperature:.3f} | {p.calibration.bias:.3f} "
              f"| {fmt(val.get(f'{p.name}/ece_uncalibrated'))} | {fmt(val.get(f'{p.name}/ece'))} |"
              for p in card.policies], ""]


def _tier_lines(card: PolicyCard, evaluation: dict | None = None) -> list[str]:
    tiers = card_tiers(card)
    if not tiers:
        return ["Decision tiers: none (policy card schema v1): every action is `none`; use the flags.", ""]
    tested = bool(evaluation and evaluation.get("tiers"))
    return ["## Decision tiers (chosen on validation" + ("; test numbers from the latest test evaluation)" if tested
                                                         else "; `tweetguard evaluate` adds the test numbers)"),
            ("Action per policy: `remove` at or above the remove threshold, else `review` at or above the review "
             "threshold, else `none`. A tier whose precision target was not reached on validation is off."), "",
            tier_table(evaluation["tiers"], "test") if tested else tier_table(tiers), ""]


def _non_commercial_lines(card: PolicyCard) -> list[str]:
    """The non-commercial notice, when any training source is under a NonCommercial (CC BY-NC-*) license."""
    nc = [s for s in card.sources if is_non_commercial(s.license)]
    if not nc:
        return []
    names = ", ".join(s.name for s in nc)
    licenses = ",".join(sorted({s.license for s in nc}))
    return [f"**Non-commercial: trained on CC BY-NC-* data ({names}).** This model may be used for non-commercial "
            f"purposes only. Retrain with `data.exclude_licenses=[{licenses}]` for any other use.", ""]


RESEARCH_ONLY = "research use only, no redistribution (CONAN's license)"


def _research_only_lines(card: PolicyCard) -> list[str]:
    """The research-only notice, when any training source's license is research-only (`is_research_only`)."""
    ro = [s for s in card.sources if is_research_only(s.license)]
    if not ro:
        return []
    names = ", ".join(f"{s.name}: {s.license}" for s in ro)
    return [f"**Research only: trained on data for {RESEARCH_ONLY}: {names}.** This model may be used for research "
            "only and not redistributed. Retrain with `data.exclude_restricted=true` (configs/permissive.yaml: no "
            "non-commercial or research-only source) for any other use.", ""]
