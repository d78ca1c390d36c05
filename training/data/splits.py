"""Rows of the unified dataset and how they are split: official splits kept, split-less sources split by a
seeded stratified cut (or a fixed id-hash test part), copies of one text merged, test texts kept out of
validation and train (the rules are listed in `training.data.prepare` and data/README.md)."""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from serving.policies import NEGATIVE, POLICIES, POSITIVE, UNKNOWN
from training.config import DataConfig
from training.data.sources import NearDuplicates, SourceSpec

SPLITS = ("train", "validation", "test")


@dataclass
class Row:
    id: str
    text: str
    source: str
    labels: tuple[int, int, int]
    subset: str
    raw_label: str
    split: str | None
    key: str
    # The labels by the source's own rules, where a label-only source replaced some (`labels_for`): generated
    # splits are stratified by these, so adding a label-only source does not move rows between splits.
    own_labels: tuple[int, int, int] | None = None
    linked_key: str = ""  # the text key of the other side of the row's pair (`group_split: pairs`)
    origin: str = ""  # where within the source the row comes from (counted in the data card)


def merge_labels(label_sets: list[tuple[int, int, int]]) -> tuple[tuple[int, int, int], bool]:
    """Per policy: majority of the known labels; a tie is unknown. Returns (labels, had_conflict)."""
    merged, conflict = [], False
    for j in range(len(POLICIES)):
        votes = Counter(ls[j] for ls in label_sets if ls[j] != UNKNOWN)
        pos, neg = votes[POSITIVE], votes[NEGATIVE]
        conflict |= pos > 0 and neg > 0
        merged.append(POSITIVE if pos > neg else NEGATIVE if neg > pos else UNKNOWN)
    return (merged[0], merged[1], merged[2]), conflict


def dedup(rows: list[Row], stats: dict, where: str) -> list[Row]:
    """Merge rows sharing a text key (first row kept, labels by majority); counts per source."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.key].append(r)
    out = []
    for group in groups.values():
        first = group[0]
        if len(group) > 1:
            first.labels, conflict = merge_labels([r.labels for r in group])
            if any(r.own_labels for r in group):
                first.own_labels = merge_labels([r.own_labels or r.labels for r in group])[0]
            for r in group[1:]:
                stats[r.source][f"merged_{where}"] += 1
            stats[first.source]["label_conflicts"] += conflict
        out.append(first)
    return out


def stratified_split(rows: list[Row], cfg: DataConfig, name: str, fractions: dict[str, float]) -> None:
    """Assign `split` in place: per label pattern, a seeded shuffle cut by the given fractions."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
    strata: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        strata[r.own_labels or r.labels].append(r)
    for key in sorted(strata):
        group = strata[key]
        order = rng.permutation(len(group))
        cut = 0
        for split, frac in fractions.items():
            n = int(round(len(group) * frac))
            for i in order[cut:cut + n]:
                group[i].split = split
            cut += n
        for i in order[cut:]:
            group[i].split = "train"


def id_hash_fraction(seed: int, native_id: str) -> float:
    """A stable number in [0, 1) per (seed, native id): independent of row order, data.seed and the machine."""
    return int(hashlib.sha256(f"{seed}:{native_id}".encode()).hexdigest()[:15], 16) / 16**15


def pair_groups(rows: list[Row]) -> dict[str, str]:
    """Connected components over text keys, a row's key linked to its pair's (`linked_key`): key -> the smallest
    key of its component. A hate statement with several replies, a reply reused for several statements and
    paraphrases that normalise to one key all fall in one component."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for r in rows:
        a, b = find(r.key), find(r.linked_key or r.key)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the root is always the smallest key of its component
    return {key: find(key) for key in list(parent)}


def sample_whole_pairs(rows: list[Row], keep: int, rng: np.random.Generator) -> list[Row]:
    """About `keep` of `rows` (a seeded sample, in their order), a whole pair component at a time (`pair_groups`;
    a row without a pair is its own): a contrast pair keeps its hard negative. Components are taken in a random
    order until `keep` rows are reached, so the sample may overshoot by less than one component."""
    component = pair_groups(rows)
    roots = sorted({component[r.key] for r in rows})
    size = Counter(component[r.key] for r in rows)
    taken, n = set(), 0
    for i in rng.permutation(len(roots)):
        if n >= keep:
            break
        taken.add(roots[i])
        n += size[roots[i]]
    return [r for r in rows if component[r.key] in taken]


def group_split(rows: list[Row], cfg: DataConfig, test_fraction: float | None = None) -> None:
    """Assign `split` in place, a whole component at a time (`pair_groups`): test / validation / train by
    `id_hash_fraction(data.seed, smallest key)` below test_fraction / + validation_fraction / the rest
    (`test_fraction` None: data.test_fraction; 0 carves validation only, out of train rows)."""
    test = cfg.test_fraction if test_fraction is None else test_fraction
    smallest = pair_groups(rows)
    for r in rows:
        at = id_hash_fraction(cfg.seed, smallest[r.key])
        r.split = ("test" if at < test else "validation" if at < test + cfg.validation_fraction else "train")


def near_duplicates(rows: list[Row], reference: list[str], rule: NearDuplicates) -> tuple[list[Row], list[dict]]:
    """(kept rows, dropped ones): a row is dropped when its text key equals a reference key, or shares its first
    `rule.prefix_words` words with one and their word sets have a Jaccard similarity >= `rule.jaccard`. Each
    dropped entry: {id, key, matched, how ('equal' / 'similar')}."""
    exact = set(reference)
    by_prefix: dict[tuple[str, ...], list[tuple[str, set[str]]]] = defaultdict(list)
    for key in exact:
        words = key.split()
        by_prefix[tuple(words[:rule.prefix_words])].append((key, set(words)))
    kept, dropped = [], []
    for r in rows:
        words = r.key.split()
        mine = set(words)
        if r.key in exact:
            dropped.append({"id": r.id, "key": r.key, "matched": r.key, "how": "equal"})
            continue
        match = next((key for key, theirs in by_prefix.get(tuple(words[:rule.prefix_words]), [])
                      if len(mine & theirs) >= rule.jaccard * len(mine | theirs)), None)
        if match is None:
            kept.append(r)
        else:
            dropped.append({"id": r.id, "key": r.key, "matched": match, "how": "similar"})
    return kept, dropped


def assign_splits(rows: list[Row], spec: SourceSpec, cfg: DataConfig, stats: dict) -> list[Row]:
    official = [r for r in rows if r.split is not None]
    if spec.group_split == "pairs" and spec.validation_from_train:  # validation carved out of train by pair
        rest, train = [r for r in official if r.split != "train"], [r for r in official if r.split == "train"]
        group_split(train, cfg, test_fraction=0.0)
        return rest + dedup(train, stats, "within_source")
    if spec.group_split == "pairs":  # split first, so every copy's link counts; copies share a split, then merge
        grouped = [r for r in rows if r.split is None]
        group_split(grouped, cfg)
        return official + dedup(grouped, stats, "within_source")
    splitless = dedup([r for r in rows if r.split is None], stats, "within_source")
    if splitless and spec.test_holdout:  # the source's own fixed test part, by id hash; the rest is its train
        for r in splitless:
            held = id_hash_fraction(spec.test_holdout.seed, r.id.split(":", 1)[1]) < spec.test_holdout.fraction
            r.split = r.subset = "test" if held else "train"
        official, splitless = official + splitless, []
    if splitless:
        stratified_split(splitless, cfg, spec.name,
                         {"test": cfg.test_fraction, "validation": cfg.validation_fraction})
    if spec.validation_from_train:
        rest = [r for r in official if r.split != "train"]
        train = dedup([r for r in official if r.split == "train"], stats, "within_source")
        stratified_split(train, cfg, spec.name, {"validation": cfg.validation_fraction})
        official = rest + train
    return official + splitless


def build_splits(rows: list[Row], cfg: DataConfig, stats: dict) -> dict[str, list[Row]]:
    by_split = {s: [r for r in rows if r.split == s] for s in SPLITS}
    test_keys = Counter(r.key for r in by_split["test"])
    stats["_test"]["duplicate_texts_kept"] = sum(n - 1 for n in test_keys.values())
    taken = set(test_keys)
    for split in ("validation", "train"):
        kept = []
        for r in by_split[split]:
            if r.key in taken:
                stats[r.source][f"leak_removed_from_{split}"] += 1
            else:
                kept.append(r)
        by_split[split] = dedup(kept, stats, split)
        taken |= {r.key for r in by_split[split]}
    unknown = sorted(set(cfg.train_share) - {r.source for r in rows})
    if unknown:
        raise ValueError(f"data.train_share names {unknown}, which are not among the prepared sources "
                         f"{sorted({r.source for r in rows})}")
    if cfg.max_train_rows_per_source or cfg.train_share:
        rng = np.random.default_rng(cfg.seed)
        capped = []
        for source in dict.fromkeys(r.source for r in by_split["train"]):
            part = [r for r in by_split["train"] if r.source == source]
            keep = round(len(part) * cfg.train_share.get(source, 1.0))
            keep = min(keep, cfg.max_train_rows_per_source or keep)
            if len(part) > keep:
                kept = sample_whole_pairs(part, keep, rng)
                stats[source]["capped_from_train"] += len(part) - len(kept)
                part = kept
            capped += part
        by_split["train"] = capped
    return by_split
