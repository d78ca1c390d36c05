"""The model directory's `README.md` in the Hugging Face Hub's model-card format.

YAML front matter that `huggingface_hub.ModelCard.load` reads (license, language, pipeline tag, datasets and a
`model-index` of the evaluation results), then the registry's model card text (`modelcard.model_card_markdown`):
one generator for the text, and every number read from the policy card (validation, at training) or from a
`tweetguard evaluate` report (test). Training writes it into the artifact directory before the directory is logged
(a registered version's files never change); `attach_model_card` logs it again, with the test results once the
version is evaluated on test, beside `model_card.md` in the training run (`model_card/v<N>/README.md`).

License: the model's is `other`, named after its training data; `source_licenses` lists each source's license and
`non_commercial` is true when any of them is NonCommercial (a model trained on CC BY-NC-* data is for
non-commercial use only), `research_only` when any of them is research-only (research use only, no redistribution:
CONAN's license).
"""

from __future__ import annotations

from pathlib import Path

from serving.artifact import PolicyCard, read_card
from serving.policies import POLICIES
from training.data.sources import is_non_commercial, is_research_only
from training.evaluation.modelcard import model_card_markdown

HUB_README = "README.md"
TASK = "text-classification"
UNIFIED_DATASET = "tweetguard-unified"  # the sources mapped onto the three policies (`tweetguard data`)
# model-index metric type (our metrics' key suffix, `masked_metrics`) -> its pretty name
EVAL_METRICS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "f1": "F1", "precision": "precision",
                "recall": "recall", "ece": "ECE"}
LICENSE_SECTION = "training-data-and-licenses"  # the anchor of model_card_markdown's license table


def eval_results(metrics: dict[str, float], split: str, revision: str | None = None) -> list:
    """One `huggingface_hub.EvalResult` per policy and metric of `metrics` (`masked_metrics` keys: `<policy>/<m>`;
    precision, recall and F1 at the policy card's threshold); the policy is the metric's config."""
    from huggingface_hub import EvalResult

    return [EvalResult(task_type=TASK, task_name="multi-label policy classification", dataset_type=UNIFIED_DATASET,
                       dataset_name=f"tweetguard unified tweets ({split})", dataset_split=split,
                       dataset_revision=revision, metric_type=metric, metric_name=f"{policy} {pretty}",
                       metric_config=policy, metric_value=float(metrics[f"{policy}/{metric}"]))
            for policy in POLICIES for metric, pretty in EVAL_METRICS.items() if f"{policy}/{metric}" in metrics]


def hub_model_card(card: PolicyCard, *, name: str | None = None, version: str | None = None,
                   evaluation: dict | None = None):
    """The `huggingface_hub.ModelCard`: validation results from the card (on its dataset hash), plus the test
    results of `evaluation` (a `tweetguard evaluate` report) when given."""
    from huggingface_hub import ModelCard, ModelCardData

    non_commercial = any(is_non_commercial(s.license) for s in card.sources)
    research_only = any(is_research_only(s.license) for s in card.sources)
    results = eval_results(card.validation_metrics, "validation", card.dataset_hash or None)
    if evaluation:
        results += eval_results(evaluation["overall"], evaluation.get("model", {}).get("split", "test"))
    data = ModelCardData(
        model_name=name or card.model_name, language="en", library_name="transformers", pipeline_tag=TASK,
        license="other", license_name="tweetguard-training-data" + ("-noncommercial" if non_commercial else "")
        + ("-researchonly" if research_only else ""),
        license_link=f"{HUB_README}#{LICENSE_SECTION}", non_commercial=non_commercial, research_only=research_only,
        source_licenses=[{"source": s.name, "license": s.license, "non_commercial": is_non_commercial(s.license),
                          "research_only": is_research_only(s.license)} for s in card.sources],
        datasets=[s.name for s in card.sources] or None,
        tags=["multi-label-classification", "content-moderation", "tweets", "tweetguard"],
        eval_results=results or None,
    )
    body = model_card_markdown(card, name=name, version=version, evaluation=evaluation)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_hub_readme(model_dir: str | Path) -> Path:
    """Write `README.md` into a transformer artifact directory from its policy card; returns its path. Call it before
    the directory is logged: a registered version's files never change."""
    path = Path(model_dir) / HUB_README
    hub_model_card(read_card(model_dir)).save(path)
    return path
