"""The source declarations' schema (`data/sources.yaml`) and the raw rows readers produce from them.

A source declares its files, its reader and, per policy, which raw label values are positive / negative /
unknown. `load_sources` validates a declaration file; `training.data.readers` turns a source's files into
`RawRow`s and `BadRow`s; `map_labels` applies the declared mapping to a raw row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.policies import NEGATIVE, POLICIES, POSITIVE, UNKNOWN
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


class SourceSpec(Strict):
    name: str
    description: str
    license: str = Field(description="license id, 'none-stated' or 'unverified:<what>'")
    domain: Literal["tweets", "comments", "gab"] = "tweets"
    reader: Literal["table", "lines", "ethos", "latent_hatred", "hf"] = "table"
    hf_dataset: str | None = Field(
        None, description="reader hf: a Hugging Face hub dataset id or a local dataset dir (files[].path = its split)"
    )
    delimiter: str = "\t"
    quoting: Literal["none", "minimal"] = "minimal"
    text_column: str = "text"
    id_column: str | None = Field(None, description="native id field; null = file line number")
    files: list[FileSpec]
    validation_from_train: bool = Field(False, description="carve validation out of the official train split")
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
    return specs


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


def raw_label(row: RawRow, spec: SourceSpec) -> str:
    """The source's own label fields of a row, `col=value;...` (kept for published-comparable benchmarks)."""
    cols = sorted({c for rule in spec.policies.values() for c in rule.columns}
                  | {rule.weak_negative.column for rule in spec.policies.values() if rule.weak_negative})
    return ";".join(f"{c}={row.fields.get(c, '')}" for c in cols)
