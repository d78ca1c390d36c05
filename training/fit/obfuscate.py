"""Obfuscated-spelling copies of train rows (`train.obfuscate`; 0 = off).

The policies count a word however it is spelled — "obfuscated, spaced, with digits or symbols for letters"
(docs/policies.md, `abusive`) — and people who evade filters spell that way, but few training texts do. So for a
share of the train rows a copy is added in which one word of four or more letters, chosen at random, is re-spelled
in one of the ways filters are evaded: look-alike digits or symbols for some of its letters ("1d10t", "k!ll"),
its letters spaced or dotted ("s t u p i d", "s.t.u.p.i.d"), a vowel masked ("b*tch"), or a letter stretched
("stuuupid"). Labels are unchanged: the meaning does not depend on the spelling, for an insult as for the same
word quoted in counter-speech, so a copy of a negative row teaches as much as a copy of a positive one.

No word list chooses the word (the slur-and-swear list is for evaluation slices only, `data/slur_swear_terms.yaml`):
any alphabetic word of four or more letters that is not a handle or a hashtag may be chosen, so the copies teach
that spelling does not change meaning, not a list's words. Eligible rows have such a word and at least one known
label; at most floor(fraction x eligible) copies, a seeded sample. A copy whose `text_key` is already a text of any
split (or of another copy) is skipped, as the identity swaps are. Deterministic for (seed, row); a copy's id is
`<id>#obf1`, appended after the original rows. Validation and test are never changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from training.data.sources import text_key
from training.fit.augment import held_out_keys

OBF_ID = "#obf1"
STYLES = ("lookalike", "spaced", "dotted", "masked", "stretched")
LOOKALIKE = {"a": "4@", "e": "3", "i": "1!", "o": "0", "s": "5$", "t": "7", "l": "1", "g": "9", "b": "8"}
VOWELS = set("aeiou")
WORD = re.compile(r"(?<![\w@#])[A-Za-z]{4,}(?!\w)")


@dataclass
class Obfuscated:
    dataset: "datasets.Dataset"  # noqa: F821
    added: int
    eligible: int


def respell(word: str, style: str, rng: np.random.Generator) -> str:
    """`word` spelled in `style` (one of STYLES); a style the word cannot take falls back to look-alikes, and a
    word with no look-alike letter is spaced."""
    lower = word.lower()
    if style == "spaced":
        return " ".join(word)
    if style == "dotted":
        return ".".join(word)
    inner = [k for k in range(1, len(word)) if lower[k] in VOWELS]
    if style == "masked" and inner:
        k = int(rng.choice(inner))
        return word[:k] + "*" + word[k + 1:]
    if style == "stretched" and inner:
        k = int(rng.choice(inner))
        return word[:k + 1] + word[k] * int(rng.integers(2, 4)) + word[k + 1:]
    swappable = [k for k, c in enumerate(lower) if c in LOOKALIKE]
    if not swappable:
        return " ".join(word)
    chosen = rng.choice(swappable, size=int(rng.integers(1, len(swappable) + 1)), replace=False)
    letters = list(word)
    for k in chosen:
        options = LOOKALIKE[lower[k]]
        letters[k] = options[int(rng.integers(len(options)))]
    return "".join(letters)


def obfuscate_text(text: str, rng: np.random.Generator) -> str | None:
    """The text with one random eligible word re-spelled in a random style; None when no word is eligible."""
    words = list(WORD.finditer(text))
    if not words:
        return None
    m = words[int(rng.integers(len(words)))]
    style = STYLES[int(rng.integers(len(STYLES)))]
    return text[:m.start()] + respell(m.group(0), style, rng) + text[m.end():]


def obfuscate_rows(split, fraction: float, seed: int, exclude_keys: set[str]) -> Obfuscated:
    """Append obfuscated copies to the train `split`; see the module."""
    import datasets

    labels = np.asarray(split["labels"])
    texts = split["text"]
    eligible = [i for i, t in enumerate(texts) if (labels[i] >= 0).any() and WORD.search(t)]
    budget = int(fraction * len(eligible))
    taken = set(exclude_keys) | {text_key(t) for t in texts}
    chosen, copies = [], []
    for i in np.random.default_rng([seed]).permutation(eligible).tolist() if eligible else []:
        if len(chosen) == budget:
            break
        new = obfuscate_text(texts[i], np.random.default_rng([seed, i]))
        key = text_key(new) if new else ""
        if key and key not in taken:
            taken.add(key)
            chosen.append(i)
            copies.append(new)
    if not chosen:
        return Obfuscated(split, 0, len(eligible))
    order = np.argsort(chosen, kind="stable")
    rows = split.select([chosen[k] for k in order]).to_dict()
    rows["id"] = [f"{x}{OBF_ID}" for x in rows["id"]]
    rows["text"] = [copies[k] for k in order]
    added = datasets.Dataset.from_dict(rows, features=split.features)
    return Obfuscated(datasets.concatenate_datasets([split, added]), len(chosen), len(eligible))


def obfuscate_train(train, dataset, cfg) -> tuple["datasets.Dataset", int]:  # noqa: F821
    """The train split with `train.obfuscate` copies appended (itself when 0), and how many; the other splits
    of `dataset` are only read, for their text keys."""
    import sys

    fraction = cfg.train.obfuscate
    if not fraction:
        return train, 0
    result = obfuscate_rows(train, fraction, cfg.train.seed, held_out_keys(dataset))
    print(f"train.obfuscate={fraction}: {result.added} obfuscated-spelling copies added to {len(train)} train rows "
          f"({result.eligible} have a word of 4+ letters and a known label)", file=sys.stderr)
    return result.dataset, result.added
