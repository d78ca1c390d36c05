"""Obfuscated-spelling copies (`train.obfuscate`, training.fit.obfuscate): each style spells the word as filters
are evaded, only words of 4+ letters that are not handles or hashtags change, labels are kept, copies are
seeded, within budget, never a text of another split, and training logs how many it added."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from mlflow import MlflowClient

from training.config import ConfigError, load_config
from training.data.sources import text_key
from training.fit.obfuscate import LOOKALIKE, OBF_ID, STYLES, obfuscate_rows, obfuscate_text, respell


def split_of(texts: list[str], labels: list[list[int]] | None = None) -> datasets.Dataset:
    n = len(texts)
    return datasets.Dataset.from_dict({
        "id": [f"t{i}" for i in range(n)], "text": texts, "source": ["src"] * n,
        "labels": labels or [[i % 2, -1, 0] for i in range(n)], "subset": ["train"] * n, "raw_label": ["x"] * n})


def test_each_style_respells_the_word():
    rng = np.random.default_rng(0)
    assert respell("stupid", "spaced", rng) == "s t u p i d"
    assert respell("stupid", "dotted", rng) == "s.t.u.p.i.d"
    masked = respell("bitch", "masked", rng)
    assert masked == "b*tch"  # the only vowel after the first letter
    stretched = respell("kill", "stretched", rng)
    assert stretched.startswith("ki") and stretched.endswith("ll") and 6 <= len(stretched) <= 7 and "iii" in stretched  # 2 or 3 more
    for seed in range(20):
        look = respell("idiot", "lookalike", np.random.default_rng(seed))
        changed = [(a, b) for a, b in zip("idiot", look) if a != b]
        assert len(look) == 5 and changed and all(b in LOOKALIKE[a] for a, b in changed)
    assert respell("hmmm", "lookalike", rng) == "h m m m"  # no look-alike letter: spaced


def test_only_plain_words_of_four_letters_or_more_change():
    for seed in range(30):
        out = obfuscate_text("@username #hashtag you are an idiot", np.random.default_rng(seed))
        assert out.startswith("@username #hashtag you are an ") and not out.endswith(" idiot")
    assert obfuscate_text("@someone #tag ok no", np.random.default_rng(0)) is None
    styles = {STYLES[int(np.random.default_rng([s]).integers(len(STYLES)))] for s in range(50)}
    assert styles == set(STYLES)


def test_copies_keep_labels_are_seeded_within_budget_and_never_repeat_another_split():
    texts = [f"you utter clown number {w}" for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")]
    texts += ["ok no", "all unknown here"]
    labels = [[1, 1, 0]] * 6 + [[0, 0, 0], [-1, -1, -1]]
    split = split_of(texts, labels)
    a = obfuscate_rows(split, 0.5, seed=3, exclude_keys=set())
    b = obfuscate_rows(split, 0.5, seed=3, exclude_keys=set())
    assert a.eligible == 6 and a.added == 3 and len(a.dataset) == len(split) + 3  # floor(0.5 x 6)
    assert a.dataset["text"] == b.dataset["text"]
    copies = a.dataset.select(range(len(split), len(a.dataset)))
    for row in copies:
        original = split[int(row["id"].removesuffix(OBF_ID)[1:])]
        assert row["id"].endswith(OBF_ID) and row["labels"] == original["labels"] and row["text"] != original["text"]
    taken = {text_key(t) for t in copies["text"]}
    blocked = obfuscate_rows(split, 1.0, seed=3, exclude_keys=taken)
    assert not taken & {text_key(t) for t in blocked.dataset["text"][len(split):]}
    assert obfuscate_rows(split, 0.0, seed=3, exclude_keys=set()).added == 0


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_the_share_is_checked(value):
    with pytest.raises(ConfigError, match=r"train\.obfuscate"):
        load_config(None, [f"train.obfuscate={value}"])


def test_training_logs_the_copies_added(tmp_path, mlflow_uri, write_tiny_train_config):
    from training.fit.command import load_data
    from training.pipeline.train import train

    cfg = load_config(write_tiny_train_config(tmp_path, max_steps=2), ["train.obfuscate=0.25"])
    result = train(cfg, progress_bar=False)
    params = MlflowClient(mlflow_uri).get_run(result.run_id).data.params
    added = int(params["derived.obfuscated_rows"])
    assert added > 0 and int(params["derived.train_rows"]) == len(load_data(cfg, progress=False).dataset["train"]) + added
