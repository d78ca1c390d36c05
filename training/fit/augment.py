"""Counterfactual identity-term swap augmentation of the train split (`train.identity_swap`; 0 = off).

Whether a tweet is abusive, harassing or violent must not depend on which identity group it names (the Jigsaw
unintended-bias idea behind the bias slices of `tweetguard evaluate`). So for a share of the train rows that
mention an identity term, a copy is added in which every mentioned term is replaced by a term of another
subgroup of the same category, with the labels unchanged. Validation and test are never changed: they are only
read, so that no copy repeats one of their texts.

The terms and the matching are the bias slices' own: `data/identity_terms.yaml` (`evaluation.identity_terms`)
read by `training.data.identity.load_term_lists`, and a row "mentions" a subgroup when
`bias.slice_masks` says so (the subgroup's `bias.term_pattern`, whole words / phrases of the normalized text).
The same pattern finds the spans to replace in the raw text, so "gayle", "manager" or "straight up" never change.

What may be swapped (the file's groups decide):
- only terms listed in the file, and a term only for a term of a *different subgroup of the same category*
  (women -> men or transgender, muslim -> jewish, gay_lesbian -> straight, immigrant -> american, ...); never
  across categories;
- the file lists neutral identity mentions only, with slurs left out on purpose (its header), so a swap never
  writes or removes a slur: there is no slur list to keep out. Words that are also insults or other senses
  ("that's so gay", the colours black / white, "turn a blind eye") are swapped like any mention, their labels
  kept: the file's own caveat for those slices applies to the copies too;
- in one row each mentioned subgroup goes to one target subgroup (all its terms), and two mentioned subgroups of
  a category go to two different targets ("men and women" stays two groups); where spans of two categories
  overlap ("straight women": straight and women) the longer span is swapped and the other left alone;
- the replacing term keeps the grammatical form as far as the list tells: a singular whose plural is listed
  beside it goes to such a singular of the target (woman -> man, gay -> heterosexual), a listed plural to a
  plural (women -> men, muslims -> christians), other terms to the target's other terms, by position
  (jewish -> islam); a target without that form gives any of its terms. Case style is kept: lowercase,
  Capitalized (first letter), Title Case (a capitalized phrase) and UPPER.

How many: one copy per chosen row, at most floor(`fraction` x matching rows) copies: a seeded sample of the
matching rows whose copy is valid. Matching rows mention an identity term and have at least one known label (a
copy of a row whose labels are all unknown would add no loss, only compute). A copy is valid when the raw text has a span to swap (a row matched only
through an emoji name has none), the copy's slices contain every target subgroup (checked with `slice_masks`,
the round trip), and its text (`text_key`) is neither in the dataset already nor a second copy (the data
pipeline's one-row-per-text rule; no train text equal to a validation or test text). Deterministic for a seed:
the sample and each row's targets come from `numpy.random.default_rng` seeded by (seed, row). A copy has the id
`<id>#swap1`, the row's source, labels and other columns, and is appended after the original rows.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving.policies import UNKNOWN
from training.data.sources import text_key
from training.data.identity import load_term_lists, slice_masks, term_pattern

if TYPE_CHECKING:
    import datasets

SWAP_ID = "#swap1"  # copy id = original id + this (one copy per row)

Terms = dict[str, dict[str, list[str]]]


@dataclass
class Swapped:
    """The augmented split, the copies added, and the matching rows (mention an identity term, a label known)."""

    dataset: datasets.Dataset
    added: int
    matching: int


def swap_identity_terms(split, terms: Terms, fraction: float, seed: int,
                        exclude_keys: Collection[str] = ()) -> Swapped:
    """`split` (a datasets.Dataset with id, text, source, labels, ...) plus the counterfactual copies (module
    docstring). `exclude_keys`: text keys a copy must not have (those of validation and test). With fraction 0
    (or no valid copy) the split itself is returned."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"identity swap fraction must be in [0, 1], got {fraction}")
    if fraction == 0 or len(split) == 0:
        return Swapped(split, 0, 0)
    texts = list(split["text"])
    masks = slice_masks(texts, terms)
    mentions = np.any(np.stack(list(masks.values())), axis=0) if masks else np.zeros(len(texts), bool)
    known = np.any(np.asarray(split["labels"]).reshape(len(texts), -1) != UNKNOWN, axis=1)
    matching = np.flatnonzero(mentions & known)
    budget = math.floor(fraction * len(matching) + 1e-9)
    if budget == 0:
        return Swapped(split, 0, len(matching))
    swapper = _Swapper(terms)
    candidates = {}  # row -> (copy text, its target slices)
    for i in matching.tolist():
        made = swapper.swap(texts[i], np.random.default_rng([seed, i]))
        if made is not None:
            candidates[i] = made
    rows = list(candidates)
    if rows:  # the round trip: every target subgroup is found in the copy by the slice matcher itself
        found = slice_masks([candidates[i][0] for i in rows], terms)
        rows = [i for k, i in enumerate(rows) if all(found[t][k] for t in candidates[i][1])]
    taken = set(exclude_keys) | {text_key(t) for t in texts}
    chosen = []
    for i in np.random.default_rng([seed]).permutation(rows).tolist() if rows else []:
        if len(chosen) == budget:
            break
        key = text_key(candidates[i][0])
        if key not in taken:
            taken.add(key)
            chosen.append(i)
    if not chosen:
        return Swapped(split, 0, len(matching))
    import datasets

    chosen.sort()
    copies = split.select(chosen).to_dict()
    copies["id"] = [f"{x}{SWAP_ID}" for x in copies["id"]]
    copies["text"] = [candidates[i][0] for i in chosen]
    added = datasets.Dataset.from_dict(copies, features=split.features)
    return Swapped(datasets.concatenate_datasets([split, added]), len(chosen), len(matching))


def held_out_keys(dataset) -> set[str]:
    """Text keys of every split but train: no augmented copy may repeat one (the one-row-per-text rule)."""
    return {text_key(t) for split in dataset if split != "train" for t in dataset[split]["text"]}


def augment_train(dataset, cfg) -> tuple[datasets.Dataset, int]:
    """The train split to encode, and the copies added: `dataset["train"]` itself (no file read) when
    `train.identity_swap` is 0, else swapped with the terms of `evaluation.identity_terms` and `train.seed`;
    the other splits are only read, for their text keys."""
    train = dataset["train"]
    fraction = cfg.train.identity_swap
    if not fraction:
        return train, 0
    terms = load_term_lists(cfg.evaluation.identity_terms)  # read as the bias slices read it
    result = swap_identity_terms(train, terms, fraction, cfg.train.seed, exclude_keys=held_out_keys(dataset))
    print(f"train.identity_swap={fraction}: {result.added} counterfactual copies added to {len(train)} train rows "
          f"({result.matching} mention an identity term and have a known label)", file=sys.stderr)
    return result.dataset, result.added


# -- one row ---------------------------------------------------------------------------------------------
def _plurals(term: str) -> set[str]:
    """Spellings a list may hold as the plural of `term` (muslim -> muslims, lady -> ladies, woman -> women)."""
    out = {term + "s", term + "es"}
    if term.endswith("y"):
        out.add(term[:-1] + "ies")
    if term.endswith("man"):
        out.add(term[:-3] + "men")
    return out


def _forms(words: list[str]) -> dict[str, str]:
    """term -> "singular" (its plural is listed too), "plural" (the plural of a listed term) or "other"."""
    listed = set(words)
    plurals = {p for w in words for p in _plurals(w) & listed}
    return {w: "plural" if w in plurals else "singular" if _plurals(w) & listed else "other" for w in words}


def match_case(source: str, target: str) -> str:
    """`target` (lowercase) in the case style of `source`: UPPER, Title Case phrase, Capitalized, lowercase."""
    if source.isupper():
        return target.upper()
    if " " in source and source.istitle():
        return target.title()
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


def _lower_same_length(text: str) -> str:
    """text.lower(), index for index (the few characters whose lowercase is longer stay as they are)."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class _Swapper:
    def __init__(self, terms: Terms):
        self.groups = {cat: list(groups) for cat, groups in terms.items()}
        self.patterns = [(cat, g, term_pattern(words)) for cat, groups in terms.items()
                         for g, words in groups.items()]
        self.words = {(cat, g): [w.lower() for w in words] for cat, groups in terms.items()
                      for g, words in groups.items()}
        self.forms = {key: _forms(words) for key, words in self.words.items()}

    def swap(self, text: str, rng: np.random.Generator) -> tuple[str, list[str]] | None:
        """(copy text, ["category/target", ...]) or None when the raw text has nothing to swap."""
        low = _lower_same_length(text)
        spans = [(m.start(), m.end(), cat, g) for cat, g, p in self.patterns for m in p.finditer(low)]
        kept: list[tuple[int, int, str, str]] = []
        for s in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):  # longest first, then leftmost
            if all(s[1] <= k[0] or s[0] >= k[1] for k in kept):
                kept.append(s)
        if not kept:
            return None
        targets: dict[tuple[str, str], str] = {}
        for cat, options in self.groups.items():
            sources = [g for g in options if any(k[2] == cat and k[3] == g for k in kept)]
            if sources and len(options) > 1:
                targets.update({(cat, s): t for s, t in zip(sources, _draw_targets(sources, options, rng))})
        pieces, end = [], 0
        for start, stop, cat, g in sorted(kept):
            if (cat, g) not in targets:
                continue
            term = low[start:stop]
            replacement = self._replacement(cat, g, targets[cat, g], term)
            pieces += [text[end:start], match_case(text[start:stop], replacement)]
            end = stop
        if not pieces:
            return None
        return "".join(pieces) + text[end:], sorted({f"{cat}/{t}" for (cat, _), t in targets.items()})

    def _replacement(self, cat: str, source: str, target: str, term: str) -> str:
        form = self.forms[cat, source][term]
        rank = [w for w in self.words[cat, source] if self.forms[cat, source][w] == form].index(term)
        same = [w for w in self.words[cat, target] if self.forms[cat, target][w] == form]
        options = same or self.words[cat, target]
        return options[rank % len(options)]


def _draw_targets(sources: list[str], options: list[str], rng: np.random.Generator) -> list[str]:
    """One target per source: distinct, none its own source (a random derangement when all are mentioned)."""
    for _ in range(100):
        draw = [options[j] for j in rng.permutation(len(options))[:len(sources)]]
        if all(t != s for s, t in zip(sources, draw)):
            return draw
    return [options[(options.index(s) + 1) % len(options)] for s in sources]  # not reached in practice
