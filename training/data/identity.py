"""Term lists: category -> subgroup -> terms (data/identity_terms.yaml, data/slur_swear_terms.yaml) and which
texts mention each subgroup. Data facts shared by the identity-swap augmentation (training.fit.augment), the bias
slices of evaluation (training.evaluation.bias) and the slur-and-swear evaluation slice: one loader, one matcher.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml

from serving.preprocess import normalize_tweet


def load_term_lists(path: str | Path, key: str = "evaluation.identity_terms") -> dict[str, dict[str, list[str]]]:
    """category -> subgroup -> terms, validated (errors name the file and the entry; `key`: the config key that
    names the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"term list not found: {path} ({key})")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected category -> subgroup -> [terms]")
    for category, groups in raw.items():
        if not isinstance(groups, dict) or not groups:
            raise ValueError(f"{path}: {category}: expected subgroup -> [terms]")
        for group, terms in groups.items():
            if not isinstance(terms, list) or not terms or not all(isinstance(t, str) and t.strip() for t in terms):
                raise ValueError(f"{path}: {category}.{group}: expected a non-empty list of terms")
    return raw


def term_pattern(words: list[str]) -> re.Pattern:
    """The matcher of one subgroup: any of its terms as a whole word or phrase of a lowercased text (longest
    term first). The one matcher: the slices use it, and so does the identity-swap augmentation
    (training.fit.augment)."""
    # Whole words / phrases; (?<![\w]) instead of \b so terms ending in "+" (lgbtq+) still match.
    alt = "|".join(re.escape(w.lower()) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alt})(?!\w)")


def slice_masks(texts: list[str], terms: dict[str, dict[str, list[str]]]) -> dict[str, np.ndarray]:
    """{"category/subgroup": bool [N]}: which texts mention the subgroup (whole words, normalized text)."""
    normalized = [normalize_tweet(t).lower() for t in texts]
    out = {}
    for category, groups in terms.items():
        for group, words in groups.items():
            pattern = term_pattern(words)
            out[f"{category}/{group}"] = np.array([bool(pattern.search(t)) for t in normalized])
    return out
