"""The unified dataset: every declared source mapped onto the policies, normalized keys, deduplicated,
leak-free splits, cached by content hash.

Output: `datasets.DatasetDict` train / validation / test with columns
`id`, `text` (raw; models normalize with `serving.preprocess.normalize_tweet`), `source`, `labels`
(POLICIES order; 1 positive, 0 negative, -1 unknown), `subset` (official part, e.g. test_a) and `raw_label`
(the source's own label fields, for published-comparable benchmarks).

Rules (documented in data/README.md):
- official test splits are never altered (benchmark comparability); their internal duplicates are counted;
- a text (by `text_key`) that is in any test split is removed from train/validation; one in validation is
  removed from train;
- within train and within validation, copies of one text (across or within sources) merge into one row:
  per policy the majority of the known labels, ties -> unknown;
- split-less sources are deduplicated first, then split with a seeded split stratified by label pattern; one
  with `test_holdout` keeps a fixed test part chosen by a stable hash of the native id (and carves validation
  from the rest, like an official train split);
- a label-only source (`labels_for`) is joined into the rows of the source it labels, by id; its rules replace
  that source's rules for the policies it lists (one row per text, so no tweet carries two labels of a policy);
  generated splits stay stratified by the source's own labels, so adding it moves no row between splits.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from serving.artifact import file_sha256
from serving.policies import POLICIES
from serving.preprocess import PREPROCESS_VERSION
from training.config import ConfigError, DataConfig
from training.data.card import DataCard, build_card
from training.data.feedback import feedback_spec
from training.data.readers import join_labels, read_label_table, read_source
from training.data.sources import (
    BadRow,
    ReadResult,
    SourceSpec,
    is_restricted,
    load_sources,
    map_labels,
    raw_label,
    shared_coverage,
    source_dir,
    spec_files,
    text_key,
)
from training.data.splits import Row, assign_splits, build_splits, near_duplicates

DATA_PIPELINE_VERSION = "1"  # bump when the output of `prepare` changes for the same inputs
MAX_LISTED_BAD_ROWS = 20


class DataError(ValueError):
    """The data cannot be prepared as configured; the message lists what to fix (file:line: reason)."""


@dataclass
class Prepared:
    dataset: "datasets.DatasetDict"  # noqa: F821
    card: DataCard
    path: Path
    card_json_path: Path
    card_md_path: Path
    fingerprint: str


def select_sources(cfg: DataConfig, specs: list[SourceSpec]) -> tuple[list[SourceSpec], dict[str, str]]:
    names = {s.name for s in specs}
    for name in (cfg.include or []) + cfg.exclude:
        if name not in names:
            raise DataError(f"data.include/exclude: unknown source {name!r} (declared: {sorted(names)})")
    opt_in = sorted(s.name for s in specs if s.opt_in)
    for name in cfg.opt_in:
        if name not in opt_in:
            what = "is not an opt-in source (it is used unless excluded)" if name in names else "is not declared"
            raise ConfigError(f"data.opt_in: {name!r} {what}; the declared opt-in sources: {opt_in}")
    if cfg.feedback and not any(s.reader == "feedback" for s in specs):
        raise ConfigError(f"data.feedback = {cfg.feedback}, but {cfg.sources_file} declares no source with "
                          "reader: feedback (copy the `feedback` entry of data/sources.yaml)")
    chosen, excluded = [], {}
    for s in specs:
        if s.reader == "feedback":  # its folder is the config's, its files the snapshots in it
            if not cfg.feedback:
                excluded[s.name] = "no data.feedback folder"
                continue
            s = feedback_spec(s, cfg.feedback)
        if cfg.include is not None and s.name not in cfg.include:
            excluded[s.name] = "not in data.include"
        elif s.name in cfg.exclude:
            excluded[s.name] = "in data.exclude"
        elif s.opt_in and s.name not in cfg.opt_in:
            excluded[s.name] = "opt-in, not in data.opt_in"
        elif any(s.license == lic or s.license.startswith(lic + ":") for lic in cfg.exclude_licenses):
            excluded[s.name] = f"license {s.license} in data.exclude_licenses"
        elif cfg.exclude_restricted and is_restricted(s.license):
            excluded[s.name] = f"license {s.license} is non-commercial or research-only (data.exclude_restricted)"
        else:
            chosen.append(s)
    if not chosen:
        raise DataError("no sources left after data.include / data.exclude / data.exclude_licenses")
    return chosen, excluded


def source_hash(spec: SourceSpec, root: Path) -> str:
    if spec.reader == "hf":
        local = root / (spec.hf_dataset or "")
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else []
        parts = [f"hub:{spec.hf_dataset}"] + [f"{p.relative_to(local)}:{file_sha256(p)}" for p in files]
    else:
        parts = []
        for rel in spec_files(spec):
            path = source_dir(spec, root) / rel
            if not path.is_file():
                raise FileNotFoundError(f"source {spec.name}: file not found: {path} (data.root = {root})")
            parts.append(f"{rel}:{file_sha256(path)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def collect(specs: list[SourceSpec], cfg: DataConfig, root: Path, progress: bool,
            references: dict[str, SourceSpec] | None = None) -> tuple[list[Row], dict]:
    """`references`: sources the run leaves out that a chosen source's `near_duplicates_of` names (read for their
    text keys only)."""
    from tqdm.auto import tqdm

    bad: dict[str, list[BadRow]] = {}
    info: dict = {"defects": {}, "notes": {}, "empty_after_normalization": {}, "near_duplicates": {}}
    keys_by_source: dict[str, list[str]] = {}
    rows: list[Row] = []
    stats: dict = defaultdict(Counter)
    # Label-only sources (`labels_for`) first: their labels are joined into the rows of the source they label.
    overlays: dict[str, list[tuple[SourceSpec, dict, ReadResult]]] = defaultdict(list)
    for spec in (s for s in specs if s.labels_for):
        labels, result = read_label_table(spec, source_dir(spec, root))
        overlays[spec.labels_for].append((spec, labels, result))
        stats[spec.name]["read"] = len(labels) + len(result.bad)
    # A source with near_duplicates_of after the others, so the source it defers to has been read.
    ordered = sorted((s for s in specs if not s.labels_for), key=lambda s: s.near_duplicates_of is not None)
    for spec in tqdm(ordered, desc="reading sources", unit="source", disable=not progress):
        result = read_source(spec, root)
        effective = spec
        for overlay, labels, overlay_result in overlays.get(spec.name, []):
            joined = join_labels(result, overlay, labels)
            effective = effective.model_copy(update={"policies": {**effective.policies, **overlay.policies}})
            overlay_result.notes.append(f"labels joined into {spec.name}: {joined} rows; its rules replace "
                                        f"{spec.name}'s for {', '.join(overlay.policies)}")
        label_specs = [spec] + [overlay for overlay, _, _ in overlays.get(spec.name, [])]
        bad_rows = list(result.bad)
        source_rows: list[Row] = []
        for raw in result.rows:
            for placeholder, ours in spec.text_replace.items():
                raw.text = raw.text.replace(placeholder, ours)
                raw.linked_text = raw.linked_text.replace(placeholder, ours)
            if not raw.text.strip():
                if "empty_text" in spec.known_defects:  # declared: a blank line where a text should be
                    result.defects["empty_text"] = result.defects.get("empty_text", 0) + 1
                else:
                    bad_rows.append(BadRow(raw.file, raw.line, "empty text"))
                continue
            labels, problem = map_labels(raw, effective)
            if problem:
                bad_rows.append(BadRow(raw.file, raw.line, problem))
                continue
            key = text_key(raw.text)
            if not key:  # e.g. a tweet that is only a mention and a link: nothing for any model to read
                info["empty_after_normalization"][spec.name] = info["empty_after_normalization"].get(spec.name, 0) + 1
                continue
            own = map_labels(raw, spec)[0] if effective is not spec else None
            source_rows.append(Row(f"{spec.name}:{raw.native_id}", raw.text, spec.name, labels, raw.subset,
                                   raw_label(raw, *label_specs), raw.split, key, own,
                                   text_key(raw.linked_text) if raw.linked_text else "", raw.origin))
        _check_defects(spec, result)
        bad[spec.name] = bad_rows
        info["defects"][spec.name] = result.defects
        info["notes"][spec.name] = result.notes
        stats[spec.name]["read"] = len(result.rows) + len(result.bad)
        keys_by_source[spec.name] = [r.key for r in source_rows]
        if nd := spec.near_duplicates_of:
            reference = keys_by_source.get(nd.of)
            if reference is None:
                reference = _keys_of((references or {})[nd.of], root)
                result.notes.append(f"near-duplicates checked against {nd.of}, which this run leaves out")
            source_rows, dropped = near_duplicates(source_rows, reference, nd)
            stats[spec.name]["near_duplicates_dropped"] = len(dropped)
            info["near_duplicates"][spec.name] = {"of": nd.of, "dropped": len(dropped), **Counter(
                d["how"] for d in dropped), "examples": dropped[:10]}
            result.notes.append(f"{len(dropped)} near-duplicates of {nd.of} dropped: "
                                f"{sum(d['how'] == 'equal' for d in dropped)} with an equal text key, "
                                f"{sum(d['how'] == 'similar' for d in dropped)} with the same first "
                                f"{nd.prefix_words} words and word-set Jaccard >= {nd.jaccard}")
        rows += assign_splits(source_rows, spec, cfg, stats)
    for target, entries in overlays.items():
        for overlay, labels, result in entries:
            if not any(s.name == target for s in specs):
                result.notes.append(f"labels_for {target}, which is left out: its labels are unused")
            else:  # labels left over matched no row of the labelled source
                result.bad += [BadRow(file, line, f"id {key} matches no {target} row") for key, (_, file, line)
                               in labels.items()]
            _check_defects(overlay, result)
            bad[overlay.name] = result.bad
            info["defects"][overlay.name] = result.defects
            info["notes"][overlay.name] = result.notes
    problems = [b for rows_ in bad.values() for b in rows_]
    if problems and cfg.on_bad_rows == "error":
        listed = "\n".join(f"  {b}" for b in problems[:MAX_LISTED_BAD_ROWS])
        raise DataError(
            f"{len(problems)} malformed rows (showing {min(len(problems), MAX_LISTED_BAD_ROWS)}); fix the files, "
            f"or set data.on_bad_rows=skip to drop and count them:\n{listed}"
        )
    info["bad_rows"] = {name: [str(b) for b in rows_] for name, rows_ in bad.items()}
    return rows, {"stats": stats, **info}


def _keys_of(spec: SourceSpec, root: Path) -> list[str]:
    """The text keys of a source's rows (read, placeholders replaced; no labels or splits)."""
    keys = []
    for raw in read_source(spec, root).rows:
        for placeholder, ours in spec.text_replace.items():
            raw.text = raw.text.replace(placeholder, ours)
        keys.append(text_key(raw.text))
    return [k for k in keys if k]


def _check_defects(spec: SourceSpec, result) -> None:
    for defect, expected in spec.known_defects.items():
        if result.defects.get(defect, 0) != expected:
            found = result.defects.get(defect, 0)
            result.notes.append(f"known defect {defect}: declared {expected}, found {found}")


def to_dataset(by_split: dict[str, list[Row]]):
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"), "text": datasets.Value("string"), "source": datasets.Value("string"),
        "labels": datasets.Sequence(datasets.Value("int8"), length=len(POLICIES)),
        "subset": datasets.Value("string"), "raw_label": datasets.Value("string"),
    })
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({
            "id": [r.id for r in rows], "text": [r.text for r in rows], "source": [r.source for r in rows],
            "labels": [list(r.labels) for r in rows], "subset": [r.subset for r in rows],
            "raw_label": [r.raw_label for r in rows],
        }, features=features)
        for split, rows in by_split.items()
    })


def cache_key(cfg: DataConfig, specs: list[SourceSpec], hashes: dict[str, str],
              coverage: dict | None = None) -> str:
    payload = {
        "pipeline": DATA_PIPELINE_VERSION, "preprocess": PREPROCESS_VERSION,
        "config": cfg.model_dump(mode="json", exclude={"cache_dir", "root", "sources_file"}),
        "sources": [s.model_dump(mode="json") for s in specs], "hashes": hashes, "shared": coverage,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def prepare(cfg: DataConfig, *, force: bool = False, progress: bool = False) -> Prepared:
    """Build (or load from the content-hash cache) the unified DatasetDict and its data card."""
    import datasets

    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: datasets directory not found: {root.resolve()} "
                                f"(set data.root or TWEETGUARD_DATA_ROOT)")
    declared = load_sources(cfg.sources_file)
    specs, excluded = select_sources(cfg, declared)
    chosen = {s.name for s in specs}
    references = {s.near_duplicates_of.of: next(d for d in declared if d.name == s.near_duplicates_of.of)
                  for s in specs if s.near_duplicates_of and s.near_duplicates_of.of not in chosen}
    hashes = {s.name: source_hash(s, root) for s in [*specs, *references.values()]}
    coverage = shared_coverage(root, declared)
    key = cache_key(cfg, specs, hashes, coverage)
    out = Path(cfg.cache_dir) / key[:16]
    paths = (out / "dataset", out / "data_card.json", out / "data_card.md")
    if not force and all(p.exists() for p in paths):
        card = DataCard.from_json(paths[1])
        return Prepared(datasets.load_from_disk(str(paths[0])), card, paths[0], paths[1], paths[2], key)
    rows, info = collect(specs, cfg, root, progress, references)
    info["shared_coverage"] = coverage
    by_split = build_splits(rows, cfg, info["stats"])
    dataset = to_dataset(by_split)
    card = build_card(specs, excluded, hashes, key, by_split, info, cfg)
    tmp = out.with_name(out.name + ".tmp")
    dataset.save_to_disk(str(tmp / "dataset"))
    card.write(tmp / "data_card.json", tmp / "data_card.md")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return Prepared(dataset, card, *paths, key)
