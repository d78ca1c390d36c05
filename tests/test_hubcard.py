"""The model directory's README.md as a Hugging Face Hub model card: it loads with `huggingface_hub.ModelCard.load`,
its model-index holds exactly the card's (and an evaluation's) metrics, and its license follows the sources'."""

from __future__ import annotations

from huggingface_hub import ModelCard

from serving.artifact import SourceRef, read_card, write_card
from serving.policies import POLICIES
from training.config import repo_root
from training.data.sources import load_sources
from training.evaluation.hubcard import EVAL_METRICS, HUB_README, hub_model_card, write_hub_readme

VALIDATION = {f"{p}/{m}": 0.5 + 0.01 * i + 0.001 * j for i, p in enumerate(POLICIES)
              for j, m in enumerate(EVAL_METRICS)}


def declared(*names: str) -> list[SourceRef]:
    """Source references with the licenses `data/sources.yaml` declares (what `tweetguard data` records)."""
    specs = {s.name: s for s in load_sources(repo_root() / "data" / "sources.yaml")}
    return [SourceRef(name=n, license=specs[n].license, content_hash=f"{i}" * 64) for i, n in enumerate(names)]


def values(results) -> dict[tuple[str, str, str], float]:
    return {(r.dataset_split, r.metric_config, r.metric_type): r.metric_value for r in results}


def test_readme_round_trips_through_modelcard_load(tmp_path, make_tiny_artifact):
    model_dir = make_tiny_artifact(tmp_path / "m")
    card = read_card(model_dir)
    card.sources, card.dataset_hash = declared("olid", "abuseval"), "f" * 64
    card.validation_metrics = {**VALIDATION, "train_kept/abusive/pr_auc": 0.1, "abusive/n_pos": 12.0}
    write_card(model_dir, card)

    loaded = ModelCard.load(write_hub_readme(model_dir))
    data = loaded.data
    assert (data.license, data.language, data.pipeline_tag, data.library_name) == (
        "other", "en", "text-classification", "transformers")
    assert data.datasets == ["olid", "abuseval"] and data.model_name == card.model_name
    # AbuseEval is CC BY-NC-SA 4.0 (as declared): the model is marked non-commercial, per source.
    assert data.non_commercial is True and data.license_name == "tweetguard-training-data-noncommercial"
    assert data.source_licenses == [
        {"source": "olid", "license": "none-stated", "non_commercial": False, "research_only": False},
        {"source": "abuseval", "license": "CC-BY-NC-SA-4.0", "non_commercial": True, "research_only": False}]
    assert data.research_only is False
    # model-index: every per-policy metric of the card, exactly (no train_kept/ or counts), on its dataset hash.
    assert values(data.eval_results) == {("validation", p, m): VALIDATION[f"{p}/{m}"]
                                         for p in POLICIES for m in EVAL_METRICS}
    assert {r.dataset_revision for r in data.eval_results} == {"f" * 64}
    # The body is the model card, with the thresholds, calibration and the way to calibrated scores.
    assert f"| abusive | {card.policy('abusive').threshold:.3f} |" in loaded.text
    assert "## Calibration" in loaded.text and "Predictor.load(model_dir)" in loaded.text
    assert "**uncalibrated**" in loaded.text and "English only" in loaded.text
    assert (model_dir / HUB_README).read_text(encoding="utf-8").startswith("---\n")


def test_commercial_sources_are_not_marked_non_commercial(tiny_card):
    card = tiny_card()
    card.sources = declared("olid")
    data = ModelCard(str(hub_model_card(card))).data
    assert data.non_commercial is False and data.license_name == "tweetguard-training-data"
    assert "non-commercial" not in ModelCard(str(hub_model_card(card))).text.lower()
    assert data.research_only is False and "research only" not in ModelCard(str(hub_model_card(card))).text.lower()


def test_research_only_sources_mark_the_hub_card_beside_non_commercial(tiny_card):
    card = tiny_card()
    card.sources = [*declared("olid", "abuseval"), SourceRef(name="conan", license="research-only",
                                                            content_hash="9" * 64)]
    hub = ModelCard(str(hub_model_card(card)))
    assert hub.data.non_commercial is True and hub.data.research_only is True
    assert hub.data.license_name == "tweetguard-training-data-noncommercial-researchonly"
    assert hub.data.source_licenses[2] == {"source": "conan", "license": "research-only", "non_commercial": False,
                                           "research_only": True}
    assert "research use only, no redistribution (CONAN's license): conan: research-only" in hub.text


def test_evaluation_adds_test_results(tiny_card):
    card = tiny_card()
    card.validation_metrics = dict(VALIDATION)
    test = {"abusive/pr_auc": 0.91, "violence/roc_auc": 0.77, "mean_pr_auc": 0.5}
    report = {"overall": test, "model": {"split": "test"}, "tiers": {}}
    data = ModelCard(str(hub_model_card(card, version="3", evaluation=report))).data
    got = values(data.eval_results)
    assert {k: v for k, v in got.items() if k[0] == "test"} == {("test", "abusive", "pr_auc"): 0.91,
                                                                ("test", "violence", "roc_auc"): 0.77}
    assert len(got) == len(VALIDATION) + 2
