"""The source declarations' schema (`data/sources.yaml`) and the raw rows readers produce from them.

A source declares its files, its reader and, per policy, which raw label values are positive / negative /
unknown. `load_sources` validates a declaration file; `training.data.readers` turns a source's files into
`RawRow`s and `BadRow`s; `map_labels` applies the declared mapping to a raw row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.policies import NEGATIVE, POLICIES, POSITIVE, UNKNOWN
from serving.preprocess import normalize_tweet
from training.config import ConfigError, read_yaml, validate


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


class SourceSpec(Strict):
    name: str
    description: str
    license: str = Field(description="license id, 'none-stated' or 'unverified:<what>'")
    domain: Literal["tweets", "comments", "gab", "reddit+gab"] = "tweets"
    reader: Literal["table", "lines", "ethos", "latent_hatred", "vulgar_functions", "hf"] = "table"
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
    return specs


def is_non_commercial(license_id: str) -> bool:
    """A Creative Commons NonCommercial license (CC-BY-NC-4.0, CC-BY-NC-SA-4.0, ...): a model trained on it is for
    non-commercial use only."""
    return "NC" in re.split(r"[-_:\s]+", license_id.upper())


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
    return out


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
