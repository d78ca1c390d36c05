"""Counterfactual identity-term swap augmentation of the train split (training.fit.augment)."""

from __future__ import annotations

import math

import datasets
import pytest
import yaml
from mlflow import MlflowClient

from training.config import ConfigError, load_config, repo_root
from training.data.identity import load_term_lists, slice_masks
from training.fit.augment import SWAP_ID, augment_train, match_case, swap_identity_terms

# Two subgroups per category: the target of a swap is forced, so texts can be checked exactly.
PAIRS = {
    "gender": {"women": ["woman", "women", "lady", "ladies"], "men": ["man", "men", "guy", "guys"]},
    "religion": {"muslim": ["muslim", "muslims", "islam"], "jewish": ["jew", "jews", "judaism"]},
    "sexual_orientation": {"gay_lesbian": ["gay", "gays"], "straight": ["heterosexual", "heterosexuals"]},
}


@pytest.fixture(scope="module")
def real_terms():
    return load_term_lists(repo_root() / "data" / "identity_terms.yaml")


def split_of(texts: list[str], labels: list[list[int]] | None = None) -> datasets.Dataset:
    n = len(texts)
    return datasets.Dataset.from_dict({
        "id": [f"t{i}" for i in range(n)], "text": texts, "source": [f"src{i % 2}" for i in range(n)],
        "labels": labels or [[i % 2, -1, 0] for i in range(n)], "subset": ["train"] * n, "raw_label": ["x"] * n,
    })


def copies(result, n_original: int) -> list[dict]:
    return [result.dataset[i] for i in range(n_original, len(result.dataset))]


MIXED = [
    "I am a gay man", "Muslims pray on Friday", "WOMEN deserve better", "gayle is my friend", "no identity here",
    "African American history month", "men and women are equal", "Jewish food is great", "straight up no",
    "Those immigrants work hard", "the Blind man and the deaf woman", "lgbtq+ rights now", "what a guy",
]


def test_swaps_within_the_category_and_keeps_case():
    texts = ["Muslims and WOMEN, a Woman", "the gays and a lady", "ISLAM and Judaism"]
    result = swap_identity_terms(split_of(texts), PAIRS, 1.0, seed=0)
    assert [c["text"] for c in copies(result, 3)] == [
        "Jews and MEN, a Man", "the heterosexuals and a guy", "JUDAISM and Islam"]


def test_real_terms_go_to_another_subgroup_of_the_same_category(real_terms):
    texts = [t for t in MIXED if "African" not in t]  # no overlapping spans here (next test)
    result = swap_identity_terms(split_of(texts), real_terms, 1.0, seed=3)
    before = slice_masks(texts, real_terms)
    made = copies(result, len(texts))
    after = slice_masks([c["text"] for c in made], real_terms)
    assert made
    for k, c in enumerate(made):
        i = int(c["id"].removesuffix(SWAP_ID)[1:])
        for category in real_terms:
            was = {g for g in real_terms[category] if before[f"{category}/{g}"][i]}
            now = {g for g in real_terms[category] if after[f"{category}/{g}"][k]}
            if was:  # every mentioned category is still mentioned; one mentioned subgroup went to another
                assert now and (len(was) > 1 or now != was), (texts[i], c["text"])


def test_overlapping_spans_swap_the_longer(real_terms):
    # "african american" (race_ethnicity/black) contains "american" (nationality_immigration/american)
    result = swap_identity_terms(split_of(["African American history month"]), real_terms, 1.0, seed=0)
    (copy,) = copies(result, 1)
    after = {s for s, m in slice_masks([copy["text"]], real_terms).items() if m[0]}
    assert copy["text"].endswith(" history month") and "African" not in copy["text"]
    assert len(after) == 1 and after.pop().startswith("race_ethnicity/")


def test_match_case():
    assert match_case("gay", "heterosexual") == "heterosexual"
    assert match_case("Gay", "straight people") == "Straight people"
    assert match_case("GAY", "straight people") == "STRAIGHT PEOPLE"
    assert match_case("African American", "asian americans") == "Asian Americans"
    assert match_case("LGBTQ+", "queer") == "QUEER"
    assert match_case("iSlam", "judaism") == "judaism"


def test_copies_keep_labels_source_and_columns_with_swap_ids():
    labels = [[1, 0, -1], [0, -1, 1], [0, 0, 0]]
    split = split_of(["a gay guy", "no terms", "Muslims pray"], labels)
    result = swap_identity_terms(split, PAIRS, 1.0, seed=0)
    assert result.added == 2 and result.matching == 2 and len(result.dataset) == 5
    assert result.dataset.features == split.features
    assert [result.dataset[i] for i in range(3)] == [split[i] for i in range(3)]  # originals untouched, first
    for c, original in zip(copies(result, 3), (split[0], split[2])):
        assert c["id"] == f"{original['id']}#swap1"
        assert {k: v for k, v in c.items() if k not in ("id", "text")} == \
               {k: v for k, v in original.items() if k not in ("id", "text")}
        assert c["text"] != original["text"]


def test_fraction_zero_returns_the_split_itself(real_terms):
    split = split_of(MIXED)
    result = swap_identity_terms(split, real_terms, 0.0, seed=0)
    assert result.dataset is split and result.added == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        swap_identity_terms(split, real_terms, 1.5, seed=0)


def test_deterministic_for_a_seed(real_terms):
    texts = MIXED * 3 + [f"the {w} number {i}" for i, w in enumerate(["women", "muslims", "gay", "immigrant"] * 5)]
    split = split_of(texts)

    def rows(seed):
        result = swap_identity_terms(split, real_terms, 0.5, seed=seed)
        return [(c["id"], c["text"]) for c in copies(result, len(texts))]

    assert rows(7) == rows(7)
    assert rows(7) != rows(8)


def test_only_rows_with_a_term_are_copied_at_most_fraction_of_them(real_terms):
    texts = MIXED + [f"plain tweet {i}" for i in range(20)]
    masks = slice_masks(texts, real_terms)
    matching = {f"t{i}" for i in range(len(texts)) if any(m[i] for m in masks.values())}
    for fraction in (0.3, 0.5, 1.0):
        result = swap_identity_terms(split_of(texts), real_terms, fraction, seed=1)
        copied = {c["id"].removesuffix(SWAP_ID) for c in copies(result, len(texts))}
        assert result.matching == len(matching)
        assert copied <= matching and result.added == len(copied)
        assert result.added <= math.floor(fraction * len(matching))
    assert result.added == len(matching)  # fraction 1: every matching row here has a valid copy


def test_a_row_without_a_known_label_is_not_copied():
    result = swap_identity_terms(split_of(["a gay guy", "the muslims"], [[-1, -1, -1], [0, -1, -1]]), PAIRS, 1.0, 0)
    assert result.matching == 1 and [c["text"] for c in copies(result, 2)] == ["the jews"]


def test_a_term_inside_another_word_is_not_swapped():
    result = swap_identity_terms(split_of(["gayle and the gay guy", "gayle, a manager", "straight up"]),
                                 PAIRS, 1.0, seed=0)
    assert [c["text"] for c in copies(result, 3)] == ["gayle and the heterosexual lady"]


def test_augmented_texts_are_found_by_the_slice_matcher_as_the_new_group(real_terms):
    texts = ["I am a gay man", "Muslims pray on Friday", "Those immigrants work hard", "the Blind man"]
    result = swap_identity_terms(split_of(texts), real_terms, 1.0, seed=0)
    before, made = slice_masks(texts, real_terms), copies(result, len(texts))
    after = slice_masks([c["text"] for c in made], real_terms)
    assert len(made) == len(texts)
    for k, c in enumerate(made):
        i = int(c["id"].removesuffix(SWAP_ID)[1:])
        old = {s for s, m in before.items() if m[i]}
        new = {s for s, m in after.items() if m[k]}
        assert not old & new, (texts[i], c["text"])  # every mention was replaced ...
        assert {s.split("/")[0] for s in new} >= {s.split("/")[0] for s in old}  # ... within its category


def test_no_copy_repeats_a_text_of_the_dataset():
    split = split_of(["a gay guy", "a heterosexual guy", "the gays"])
    # "a gay guy" -> "a heterosexual lady" collides with nothing; "a heterosexual guy" -> "a gay lady" is excluded
    result = swap_identity_terms(split, PAIRS, 1.0, seed=0, exclude_keys={"a gay lady"})
    assert [c["text"] for c in copies(result, 3)] == ["a heterosexual lady", "the heterosexuals"]
    # each copy would be the other row's text
    again = swap_identity_terms(split_of(["a gay guy", "a heterosexual lady"]), PAIRS, 1.0, seed=0)
    assert again.added == 0 and again.matching == 2


# -- config and the training command --------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_identity_swap_is_validated(value):
    assert load_config(None).train.identity_swap == 0.5  # the default config's share
    with pytest.raises(ConfigError, match=r"train\.identity_swap"):
        load_config(None, [f"train.identity_swap={value}"])


def test_augment_train_off_reads_nothing_and_never_touches_validation_or_test(tmp_path):
    dd = datasets.DatasetDict({"train": split_of(["a gay guy", "a heterosexual guy", "no"]),
                               "validation": split_of(["a gay lady"]),
                               "test": split_of(["the muslims"])})
    off = load_config(None, ["evaluation.identity_terms=/nonexistent/terms.yaml", "train.identity_swap=0"])
    train, added = augment_train(dd, off)
    assert train is dd["train"] and added == 0
    terms = tmp_path / "terms.yaml"
    terms.write_text(yaml.safe_dump(PAIRS), encoding="utf-8")
    on = load_config(None, [f"evaluation.identity_terms={terms}", "train.identity_swap=1"])
    train, added = augment_train(dd, on)
    # "a gay guy" -> "a heterosexual lady"; "a heterosexual guy" -> "a gay lady" is a validation text: not made
    assert added == 1 and len(train) == 4 and train["text"][-1] == "a heterosexual lady"
    assert dd["validation"]["text"] == ["a gay lady"] and dd["test"]["text"] == ["the muslims"]
    assert len(dd["train"]) == 3


def test_training_logs_the_copies_added(tmp_path, mlflow_uri, write_tiny_train_config):
    terms = tmp_path / "terms.yaml"  # words of the tiny vocabulary, so the tiny sources have rows to swap
    terms.write_text(yaml.safe_dump({"mood": {"lovers": ["love"], "haters": ["hate"]}}), encoding="utf-8")
    cfg = load_config(write_tiny_train_config(tmp_path, max_steps=2),
                      ["train.identity_swap=0.5", f"evaluation.identity_terms={terms}"])
    from training.fit.command import load_data
    from training.pipeline.train import train

    result = train(cfg, progress_bar=False)
    params = MlflowClient(mlflow_uri).get_run(result.run_id).data.params
    n_train = len(load_data(cfg, progress=False).dataset["train"])
    added = int(params["derived.identity_swap_rows"])
    assert added > 0 and params["train.identity_swap"] == "0.5"
    assert int(params["derived.train_rows"]) == n_train + added
