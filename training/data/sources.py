"""The source declarations' schema (`data/sources.yaml`) and the raw rows readers produce from them.

A source declares its files, its reader and, per policy, which raw label values are positive / negative /
unknown. `load_sources` validates a declaration file; `training.data.readers` turns a source's files into
`RawRow`s and `BadRow`s; `map_labels` applies the declared mapping to a raw row.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.policies import NEGATIVE, POLICIES, POSITIVE, UNKNOWN
from serving.preprocess import normalize_tweet
from training.config import ConfigError, read_yaml, repo_root, validate


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeakNegative(Strict):
    """Take a policy as negative when its own label is unknown but another field implies it (documented)."""

    column: str = Field(description="raw field that implies the negative")
    values: list[str] = Field(description="values of that field that imply it")
    enabled: bool = Field(description="the documented per-source decision (see data/README.md)")
    why: str = Field(description="the reason, shown in the data card")


class PolicyRule(Strict):
    """Raw label value(s) -> positive / negative / unknown for one policy."""

    columns: list[str] = Field(description="raw fields; several are joined with '/' (e.g. OFF/TIN/IND)")
    positive: list[str] = Field(default_factory=list)
    negative: list[str] = Field(default_factory=list)
    unknown: list[str] = Field(default_factory=list, description="values that explicitly carry no label")
    weak_negative: WeakNegative | None = None
    note: str = ""


class FileSpec(Strict):
    path: str = Field(description="relative to the source folder")
    split: Literal["train", "validation", "test"] | None = Field(None, description="official split, if any")
    subset: str = Field("", description="which official part this file is (e.g. test_a)")
    labels: str | None = Field(None, description="a separate label file joined by id (no header: id,label)")
    labels_text: str | None = Field(None, description="one label per line, aligned with a one-text-per-line file")
    label_column: str = Field("label", description="field name given to the joined labels")
    extra_labels: list[str] = Field(default_factory=list, description="more id,label files (e.g. OLID B and C)")
    extra_label_columns: list[str] = Field(default_factory=list)


class HashHoldout(Strict):
    """A split-less source's own fixed test part, chosen by a stable hash of each row's native id."""

    fraction: float = Field(gt=0, lt=1, description="share of the source's rows held out as test")
    seed: int = Field(description="salt of the hash (sha256 of '<seed>:<native id>'); not data.seed, so the "
                                  "test part stays the same whatever the run's seed")


class NearDuplicates(Strict):
    """Drop this source's rows that are near-duplicates of another source's rows (both sampled the same site)."""

    of: str = Field(description="the declared source whose rows win (it keeps its rows and official splits)")
    prefix_words: int = Field(8, ge=1, description="near-duplicate: the same first words of text_key ...")
    jaccard: float = Field(0.8, gt=0, le=1, description="... and a word-set Jaccard similarity >= this; an equal "
                                                         "text_key always counts")


class TimeSplit(Strict):
    """Reader feedback: texts in the order of their first verdict; the latest ones are the test carve."""

    validation: float = Field(0.1, ge=0, lt=0.5, description="share of texts before the test carve: validation")
    test: float = Field(0.2, gt=0, lt=0.5, description="share of the latest texts: the test carve")


class SourceSpec(Strict):
    name: str
    description: str
    license: str = Field(description="license id, 'none-stated', 'research-only' or 'unverified:<what>'")
    domain: Literal["tweets", "comments", "gab", "reddit+gab", "tweets+gab", "expert"] = Field(
        "tweets", description="where the texts come from; expert: written by NGO operators / annotators (CONAN)"
    )
    reader: Literal["table", "lines", "ethos", "latent_hatred", "vulgar_functions", "conan", "hatexplain",
                    "contrast", "feedback", "hf"] = "table"
    folder: str | None = Field(None, description="folder under data.root holding the files; null = the name")
    shipped: bool = Field(False, description="the files ship in this repository: `folder` is relative to the "
                          "repository root, not data.root (data this project wrote itself, e.g. data/contrast)")
    opt_in: bool = Field(False, description="used only when a config names it in data.opt_in")
    hf_dataset: str | None = Field(
        None, description="reader hf: a Hugging Face hub dataset id or a local dataset dir (files[].path = its split)"
    )
    delimiter: str = "\t"
    quoting: Literal["none", "minimal"] = "minimal"
    text_column: str = "text"
    id_column: str | None = Field(None, description="native id field; null = file line number")
    text_replace: dict[str, str] = Field(
        default_factory=dict, description="literal placeholder -> our convention (e.g. '[USER]' -> '@USER'), "
        "applied to every text so that no source-specific token marks a source"
    )
    split_column: str | None = Field(None, description="table: a field naming each row's official split")
    split_values: dict[str, Literal["train", "validation", "test"]] = Field(
        default_factory=dict, description="split_column value -> split (e.g. dev: validation); any other value is "
        "a malformed row"
    )
    labels_for: str | None = Field(
        None, description="a label-only source: its files are header'd id/label tables joined into the rows of "
        "the named source by (subset, id); its policy rules replace that source's rules for the policies it lists "
        "(generated splits stay stratified by that source's own labels). Leaving it out (data.exclude / "
        "exclude_licenses) restores that source's own rules"
    )
    files: list[FileSpec]
    validation_from_train: bool = Field(False, description="carve validation out of the official train split")
    test_holdout: HashHoldout | None = Field(
        None, description="split-less source: hold out its own fixed test part by a stable hash of the native id "
        "(kept out of train and validation like an official test split); the rest is train"
    )
    group_split: Literal["pairs"] | None = Field(
        None, description="split-less source: pairs: rows linked by a pair (a hate statement and its "
        "counter-narrative) form connected components over their text keys; a component goes whole to train / "
        "validation / test by a hash of data.seed and its smallest key, so a pair never straddles splits. With "
        "validation_from_train: only validation is carved, that way, out of the official train rows"
    )
    split_ids: str | None = Field(
        None, description="a JSON file {subset: [native ids]} the official splits are checked against: a row "
        "whose id is not in its file's subset list is a malformed row"
    )
    near_duplicates_of: NearDuplicates | None = Field(
        None, description="drop rows that are near-duplicates of another declared source's rows (counted in the "
        "card); that source is read for this even when the run leaves it out"
    )
    time_split: TimeSplit | None = Field(
        None, description="reader feedback: the split by time (the latest verdicts are the test carve)"
    )
    known_defects: dict[str, int] = Field(
        default_factory=dict, description="declared file defects the reader handles, with expected counts"
    )
    binarize_at: float | None = Field(None, description="ethos: annotator-agreement fractions -> 1 if >= this")
    policies: dict[str, PolicyRule] = Field(description="policy -> rule; a policy not listed is unknown")


class SourcesFile(Strict):
    sources: list[SourceSpec]


def load_sources(path: str | Path) -> list[SourceSpec]:
    specs = validate(SourcesFile, read_yaml(path), str(path)).sources
    for spec in specs:
        for policy in spec.policies:
            if policy not in POLICIES:
                raise ConfigError(f"{path}: source {spec.name}: unknown policy {policy!r} (policies: {POLICIES})")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: duplicate source names in {names}")
    by_name = {s.name: s for s in specs}
    for spec in specs:
        target = by_name.get(spec.labels_for) if spec.labels_for else None
        if spec.labels_for and not spec.id_column:
            raise ConfigError(f"{path}: source {spec.name}: labels_for needs id_column (the id its label files "
                              f"join by)")
        if spec.labels_for and (target is None or target.labels_for):
            raise ConfigError(f"{path}: source {spec.name}: labels_for {spec.labels_for!r} is not a declared "
                              f"source with texts (declared: {names})")
        if spec.test_holdout and any(f.split for f in spec.files):
            raise ConfigError(f"{path}: source {spec.name}: test_holdout is for split-less sources (a file "
                              f"declares a split)")
        if bool(spec.split_column) != bool(spec.split_values):
            raise ConfigError(f"{path}: source {spec.name}: split_column and split_values go together")
        if spec.group_split and (spec.test_holdout or (not spec.validation_from_train
                                                       and any(f.split for f in spec.files))):
            raise ConfigError(f"{path}: source {spec.name}: group_split is for split-less sources (no file split "
                              f"or test_holdout), or carves validation with validation_from_train")
        if spec.shipped and not spec.folder:
            raise ConfigError(f"{path}: source {spec.name}: shipped needs folder (relative to the repository root)")
        nd = spec.near_duplicates_of
        if nd and (nd.of == spec.name or nd.of not in by_name or by_name[nd.of].labels_for):
            raise ConfigError(f"{path}: source {spec.name}: near_duplicates_of {nd.of!r} is not another declared "
                              f"source with texts (declared: {names})")
    return specs


def source_folder(spec: SourceSpec) -> str:
    """The folder under data.root that holds a source's files (for a shipped source: under the repository)."""
    return spec.folder or spec.name


def source_dir(spec: SourceSpec, root: Path) -> Path:
    """Where a source's files are: data.root / its folder, or the repository's folder for a shipped source."""
    return (repo_root() if spec.shipped else Path(root)) / source_folder(spec)


def shared_coverage(root: Path, specs: list[SourceSpec]) -> dict:
    """How many of the shared dataset folders (those under data.root with a SOURCE.md) some declaration reads
    (label-only sources count; whether a run uses them does not)."""
    shared = sorted(p.name for p in Path(root).iterdir() if (p / "SOURCE.md").is_file())
    read = {source_folder(s) for s in specs if s.reader != "hf" and not s.shipped}
    return {"shared": len(shared), "declared": sum(n in read for n in shared),
            "undeclared": [n for n in shared if n not in read]}


def coverage_line(coverage: dict) -> str:
    line = f"{coverage['declared']} of {coverage['shared']} shared sources declared"
    return line + (f" (not declared: {', '.join(coverage['undeclared'])})" if coverage["undeclared"] else "")


def is_non_commercial(license_id: str) -> bool:
    """A Creative Commons NonCommercial license (CC-BY-NC-4.0, CC-BY-NC-SA-4.0, ...): a model trained on it is for
    non-commercial use only."""
    return "NC" in re.split(r"[-_:\s]+", license_id.upper())


def is_research_only(license_id: str) -> bool:
    """A research-only license (`research-only`, also `unverified:research-only`, `Research_Only`, `research only
    no-redistribution`: the words RESEARCH ONLY in a row, in any case and separator): research use only, no
    redistribution (CONAN's license). A model trained on it is for research only."""
    return "-RESEARCH-ONLY-" in "-" + "-".join(re.split(r"[-_:\s]+", license_id.upper())) + "-"


def is_restricted(license_id: str) -> bool:
    """Non-commercial or research-only: what `data.exclude_restricted` leaves out (configs/permissive.yaml)."""
    return is_non_commercial(license_id) or is_research_only(license_id)


@dataclass
class RawRow:
    source: str
    native_id: str
    text: str
    split: str | None
    subset: str
    fields: dict[str, str]
    file: str
    line: int
    # The text on the other side of the row's pair (CONAN: hate statement <-> counter-narrative): `group_split`
    # keeps linked texts in one split.
    linked_text: str = ""
    # Where within the source the row comes from (CONAN: the file; HateXplain: twitter / gab): rows are counted
    # per origin in the data card.
    origin: str = ""


@dataclass
class BadRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ReadResult:
    rows: list[RawRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    defects: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def spec_files(spec: SourceSpec) -> list[str]:
    out = []
    for f in spec.files:
        out += [f.path] + [p for p in (f.labels, f.labels_text) if p] + f.extra_labels
    return out + [spec.split_ids] * bool(spec.split_ids)


def map_labels(row: RawRow, spec: SourceSpec) -> tuple[tuple[int, int, int] | None, str | None]:
    """Raw fields -> policy labels by the declared rules; an unmapped value is an error for that row."""
    labels = []
    for policy in POLICIES:
        rule = spec.policies.get(policy)
        if rule is None:
            labels.append(UNKNOWN)
            continue
        value = "/".join(row.fields.get(c, "") for c in rule.columns)
        if value in rule.positive:
            labels.append(POSITIVE)
        elif value in rule.negative:
            labels.append(NEGATIVE)
        elif value in rule.unknown:
            wn = rule.weak_negative
            weak = wn is not None and wn.enabled and row.fields.get(wn.column, "") in wn.values
            labels.append(NEGATIVE if weak else UNKNOWN)
        else:
            return None, f"unmapped {policy} label {'/'.join(rule.columns)}={value!r}"
    return (labels[0], labels[1], labels[2]), None


def raw_label(row: RawRow, *specs: SourceSpec) -> str:
    """The sources' own label fields of a row, `col=value;...` (kept for published-comparable benchmarks); several
    specs: a source and the label-only sources joined into it (`labels_for`), so both label sets are kept."""
    rules = [rule for spec in specs for rule in spec.policies.values()]
    cols = sorted({c for rule in rules for c in rule.columns}
                  | {rule.weak_negative.column for rule in rules if rule.weak_negative})
    return ";".join(f"{c}={row.fields.get(c, '')}" for c in cols)


_NON_WORD = re.compile(r"[\W_]+")


def text_key(text: str) -> str:
    """Dedup/join key: the normalized tweet without punctuation, so re-formatted copies of one text
    (`@USER` vs `@user`, a `URL` token, `&amp;`, spacing, emoji vs its name) collide."""
    return _NON_WORD.sub(" ", normalize_tweet(text)).strip()


# The project's near-duplicate rule (the contrast set against evaluation texts, `tweetguard sample`): equal text keys,
# or word sets (of the keys) with Jaccard similarity >= JACCARD.
JACCARD = 0.5


def similar(key: str, index: dict[int, list[tuple[str, frozenset[str]]]], jaccard: float = JACCARD) -> str | None:
    """The first indexed key equal to `key` or with word-set Jaccard >= `jaccard` (only sizes that can reach it)."""
    mine = frozenset(key.split())
    n = len(mine)
    if not n:
        return None
    for size in range(max(1, int(jaccard * n)), int(n / jaccard) + 1):
        for other, theirs in index.get(size, ()):
            if other == key or len(mine & theirs) >= jaccard * len(mine | theirs):
                return other
    return None


def build_index(keys: list[str]) -> dict[int, list[tuple[str, frozenset[str]]]]:
    index: dict[int, list[tuple[str, frozenset[str]]]] = defaultdict(list)
    for key in dict.fromkeys(keys):
        index_key(index, key)
    return index


def index_key(index: dict[int, list[tuple[str, frozenset[str]]]], key: str) -> None:
    """Add one text key to an index of `build_index` (by its word count, as `similar` looks it up)."""
    words = frozenset(key.split())
    index[len(words)].append((key, words))
