"""Readers: one source's files -> raw rows (`RawRow`), every malformed row a `BadRow` naming file and line.

A reader yields the text, a native id, the official split (or None: split-less sources get a seeded stratified
split later), and the raw label fields by name. It never decides policy labels: the declarative mapping in
`data/sources.yaml` does (`training.data.sources.map_labels`). Nothing is dropped silently.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from training.config import ConfigError
from training.data.files import id_labels, need, records
from training.data.conan import read_conan
from training.data.contrast import read_contrast
from training.data.feedback import read_feedback
from training.data.hatexplain import read_hatexplain
from training.data.sources import BadRow, RawRow, ReadResult, SourceSpec, source_dir, text_key


def read_tabular(spec: SourceSpec, folder: Path) -> ReadResult:
    result = ReadResult()
    for i, f in enumerate(spec.files):
        path = need(folder / f.path, f"source {spec.name} files[{i}].path")
        joined = {
            col: id_labels(need(folder / p, f"source {spec.name} files[{i}] labels"), result)
            for col, p in [(f.label_column, f.labels)] * bool(f.labels) + list(zip(f.extra_label_columns, f.extra_labels))
        }
        seen_ids: set[str] = set()
        for line, rec in records(path, spec, result):
            for col in [spec.text_column] + [spec.id_column] * bool(spec.id_column):
                if col not in rec:
                    raise ValueError(f"source {spec.name}: column {col!r} not in {path} (has {sorted(rec)})")
            native_id = rec[spec.id_column] if spec.id_column else str(line)
            if native_id in seen_ids:
                result.bad.append(BadRow(str(path), line, f"duplicate id {native_id}"))
                continue
            seen_ids.add(native_id)
            split, subset = f.split, f.subset
            if spec.split_column:  # the official split is a field of each row (e.g. EDOS `split`: train/dev/test)
                value = rec.get(spec.split_column)
                if value is None:
                    raise ValueError(f"source {spec.name}: column {spec.split_column!r} not in {path} "
                                     f"(has {sorted(rec)})")
                if value not in spec.split_values:
                    result.bad.append(BadRow(str(path), line, f"unknown split {spec.split_column}={value!r}"))
                    continue
                split, subset = spec.split_values[value], subset or value
            fields = dict(rec)
            for col, labels in joined.items():
                fields[col] = labels.get(native_id, "")
            if f.labels and not fields[f.label_column]:
                result.bad.append(BadRow(str(path), line, f"id {native_id} has no label in {f.labels}"))
                continue
            result.rows.append(
                RawRow(spec.name, f"{subset or split or 'all'}/{native_id}", rec[spec.text_column],
                       split, subset, fields, str(path), line)
            )
    return result


LabelTable = dict[str, tuple[dict[str, str], str, int]]  # "<subset>/<id>" -> (label fields, file, line)


def read_label_table(spec: SourceSpec, folder: Path) -> tuple[LabelTable, ReadResult]:
    """A label-only source (`labels_for`): header'd id/label tables, keyed like the labelled source's native ids
    (`<subset>/<id>`), to be joined into that source's rows by `join_labels`."""
    result, labels = ReadResult(), {}
    for i, f in enumerate(spec.files):
        path = need(folder / f.path, f"source {spec.name} files[{i}].path")
        for line, rec in records(path, spec, result):
            if spec.id_column not in rec:
                raise ValueError(f"source {spec.name}: column {spec.id_column!r} not in {path} "
                                 f"(has {sorted(rec)})")
            key = f"{f.subset or f.split or 'all'}/{rec[spec.id_column]}"
            if key in labels:
                result.bad.append(BadRow(str(path), line, f"id {rec[spec.id_column]} labeled twice"))
                continue
            labels[key] = ({k: v for k, v in rec.items() if k != spec.id_column}, str(path), line)
    return labels, result


def join_labels(target: ReadResult, spec: SourceSpec, labels: LabelTable) -> int:
    """Join a label-only source's fields into the labelled source's rows (by native id), in place. A row without
    a label is a malformed row of the labelled source; the labels consumed are removed from `labels` (what is
    left matched no row: the caller reports it). Returns the number of rows joined."""
    kept, joined = [], 0
    for row in target.rows:
        entry = labels.pop(row.native_id, None)
        if entry is None:
            target.bad.append(BadRow(row.file, row.line, f"id {row.native_id} has no {spec.name} label"))
            continue
        row.fields.update(entry[0])
        kept.append(row)
        joined += 1
    target.rows = kept
    return joined


def read_lines(spec: SourceSpec, folder: Path) -> ReadResult:
    """One text per line + one label per line (TweetEval)."""
    result = ReadResult()
    for i, f in enumerate(spec.files):
        key = f"source {spec.name} files[{i}]"
        texts = need(folder / f.path, key + ".path").read_text(encoding="utf-8").split("\n")
        labels = need(folder / (f.labels_text or ""), key + ".labels_text").read_text(encoding="utf-8").split("\n")
        labels = [x.strip() for x in labels]
        while texts and texts[-1] == "":
            texts.pop()
        while labels and labels[-1] == "":
            labels.pop()
        if len(texts) != len(labels):
            raise ValueError(f"{key}: {len(texts)} texts in {f.path} but {len(labels)} labels in {f.labels_text}")
        for n, (text, label) in enumerate(zip(texts, labels), start=1):
            result.rows.append(RawRow(spec.name, f"{f.split}/{n}", text, f.split, f.subset,
                                      {f.label_column: label}, str(folder / f.path), n))
    return result


def _binary(value: str, at: float | None, where: BadRow, result: ReadResult) -> str | None:
    try:
        return "1" if float(value) >= (at if at is not None else 0.5) else "0"
    except ValueError:
        result.bad.append(BadRow(where.file, where.line, f"label {value!r} is not a number"))
        return None


def read_ethos(spec: SourceSpec, folder: Path) -> ReadResult:
    """ETHOS: the binary file (isHate) joined with the multi-label file (its hateful subset) by text key.

    Fractions of annotator agreement are binarized at `binarize_at` (the paper's 0.5). Multi-label rows
    whose text matches no binary row are kept as their own (hateful) rows and counted."""
    result = ReadResult()
    binary_f, multi_f = spec.files
    multi: dict[str, tuple[int, dict[str, str]]] = {}
    for line, rec in records(need(folder / multi_f.path, f"source {spec.name} files[1].path"), spec, result):
        fields = {}
        for col in ("violence", "directed_vs_generalized"):
            value = _binary(rec[col], spec.binarize_at, BadRow(str(folder / multi_f.path), line, ""), result)
            if value is None:
                break
            fields[col] = value
        else:
            multi.setdefault(text_key(rec[spec.text_column]), (line, fields | {"text": rec[spec.text_column]}))
    path = need(folder / binary_f.path, f"source {spec.name} files[0].path")
    for line, rec in records(path, spec, result):
        hate = _binary(rec["isHate"], spec.binarize_at, BadRow(str(path), line, ""), result)
        if hate is None:
            continue
        _, extra = multi.pop(text_key(rec[spec.text_column]), (0, {}))
        fields = {"isHate": hate, "violence": extra.get("violence", ""),
                  "directed_vs_generalized": extra.get("directed_vs_generalized", "")}
        result.rows.append(RawRow(spec.name, f"binary/{line}", rec[spec.text_column], None, "", fields, str(path), line))
    for line, extra in multi.values():
        text = extra.pop("text")
        result.rows.append(RawRow(spec.name, f"multi/{line}", text, None, "", {"isHate": "1"} | extra,
                                  str(folder / multi_f.path), line))
    if multi:
        result.notes.append(f"{len(multi)} multi-label rows matched no binary row: kept as hateful rows")
    return result


def read_latent_hatred(spec: SourceSpec, folder: Path) -> ReadResult:
    """Latent Hatred: stage-1 posts (class) joined with stage-2 fine-grained classes by text key.

    Derived field `stage2`: 'threatening' if either stage-2 class column says so, 'other_implicit' for any
    other stage-2 class, '' when the post has no stage-2 annotation."""
    result = ReadResult()
    stage1_f, stage2_f = spec.files
    stage2: dict[str, tuple[int, str]] = {}
    path2 = need(folder / stage2_f.path, f"source {spec.name} files[1].path")
    for line, rec in records(path2, spec, result):
        classes = {rec["implicit_class"], rec["extra_implicit_class"]} - {""}
        value = "threatening" if "threatening" in classes else "other_implicit"
        stage2.setdefault(text_key(rec[spec.text_column]), (line, value, rec[spec.text_column]))
    path1 = need(folder / stage1_f.path, f"source {spec.name} files[0].path")
    for line, rec in records(path1, spec, result):
        _, value, _ = stage2.pop(text_key(rec[spec.text_column]), (0, "", ""))
        result.rows.append(RawRow(spec.name, f"stg1/{line}", rec[spec.text_column], None, "",
                                  {"class": rec["class"], "stage2": value}, str(path1), line))
    for line, value, text in stage2.values():
        result.rows.append(RawRow(spec.name, f"stg2/{line}", text, None, "",
                                  {"class": "implicit_hate", "stage2": value}, str(path2), line))
    if stage2:
        result.notes.append(f"{len(stage2)} stage-2 posts matched no stage-1 post: kept as implicit_hate rows")
    return result


_BOLD_TAG = re.compile(r"</?b>", re.IGNORECASE)
# Function codes: aggression, emotion, emphasis, auxiliary, signalling group identity, not vulgar in context.
VULGAR_FUNCTIONS = ("0", "1", "2", "3", "4", "5")


def read_vulgar_functions(spec: SourceSpec, folder: Path) -> ReadResult:
    """Vulgar Functions: one row per vulgar word, merged into one row per tweet (by `id_column`).

    The `<b>` tags around the vulgar word are stripped and HTML entities decoded. Derived fields: `functions`,
    the tweet's distinct `Function` codes joined by '+', and `aggression`: '1' if any vulgar word of the tweet
    has Function 0 (aggression), else '0'. Declared defects: `mangled_id` (rows whose id a spreadsheet turned
    into a number like 8.86E+17; such ids are not unique, so their rows merge only with rows of the same text
    and get the native id `<id>~<n>`) and `differing_texts` (tweet ids whose rows' texts differ beyond punctuation:
    the first row's text is kept). Undeclared, both are malformed rows."""
    result = ReadResult()
    (f,) = spec.files
    path = need(folder / f.path, f"source {spec.name} files[0].path")
    tweets: dict[str, dict] = {}
    mangled: dict[str, list[str]] = {}
    for line, rec in records(path, spec, result):
        for col in (spec.id_column, spec.text_column, "Function"):
            if col not in rec:
                raise ValueError(f"source {spec.name}: column {col!r} not in {path} (has {sorted(rec)})")
        if rec["Function"] not in VULGAR_FUNCTIONS:
            result.bad.append(BadRow(str(path), line, f"Function {rec['Function']!r} is not one of 0-5"))
            continue
        tweet_id, text = rec[spec.id_column], html.unescape(_BOLD_TAG.sub("", rec[spec.text_column])).strip()
        key = tweet_id
        if not tweet_id.isdigit():
            if "mangled_id" not in spec.known_defects:
                result.bad.append(BadRow(str(path), line, f"tweet id {tweet_id!r} is not a number"))
                continue
            result.defects["mangled_id"] = result.defects.get("mangled_id", 0) + 1
            texts = mangled.setdefault(tweet_id, [])
            if text_key(text) not in texts:
                texts.append(text_key(text))
            key = f"{tweet_id}~{texts.index(text_key(text)) + 1}"
        tweet = tweets.setdefault(key, {"text": text, "line": line, "functions": set(), "texts": set(),
                                        "keys": set()})
        tweet["functions"].add(rec["Function"])
        tweet["texts"].add(text)
        tweet["keys"].add(text_key(text))
    if n := sum(len(t["texts"]) > 1 and len(t["keys"]) == 1 for t in tweets.values()):
        result.notes.append(f"{n} tweet ids whose rows' texts differ only in punctuation: the first row's text "
                            f"kept")
    differing = [k for k, t in tweets.items() if len(t["keys"]) > 1]
    if differing:
        if "differing_texts" in spec.known_defects:
            result.defects["differing_texts"] = len(differing)
        else:
            for k in differing:
                line = tweets.pop(k)["line"]
                result.bad.append(BadRow(str(path), line, f"tweet id {k}: rows with different texts"))
    for key, t in tweets.items():
        fields = {"functions": "+".join(sorted(t["functions"])),
                  "aggression": "1" if "0" in t["functions"] else "0"}
        result.rows.append(RawRow(spec.name, key, t["text"], None, f.subset, fields, str(path), t["line"]))
    return result


def read_hf(spec: SourceSpec, root: Path) -> ReadResult:
    """A Hugging Face dataset (hub id, or a local directory `datasets.load_dataset` reads)."""
    import datasets

    if not spec.hf_dataset:
        raise ConfigError(f"source {spec.name}: reader hf needs hf_dataset")
    local = root / spec.hf_dataset
    ref = str(local) if local.is_dir() else spec.hf_dataset
    loaded = datasets.load_dataset(ref)
    result = ReadResult()
    for i, f in enumerate(spec.files):
        if f.path not in loaded:
            raise ValueError(f"source {spec.name} files[{i}].path: split {f.path!r} not in {ref} ({list(loaded)})")
        part = loaded[f.path]
        if spec.text_column not in part.column_names:
            raise ValueError(f"source {spec.name}: column {spec.text_column!r} not in {ref}[{f.path}]")
        for n, rec in enumerate(part, start=1):
            text = rec[spec.text_column]
            if not isinstance(text, str):
                result.bad.append(BadRow(f"{ref}[{f.path}]", n, f"text is {type(text).__name__}, not a string"))
                continue
            native_id = str(rec[spec.id_column]) if spec.id_column else str(n)
            fields = {k: "" if v is None else str(v) for k, v in rec.items() if k != spec.text_column}
            result.rows.append(RawRow(spec.name, f"{f.path}/{native_id}", text, f.split, f.subset, fields,
                                      f"{ref}[{f.path}]", n))
    return result


READERS = {"table": read_tabular, "lines": read_lines, "ethos": read_ethos, "latent_hatred": read_latent_hatred,
           "vulgar_functions": read_vulgar_functions, "conan": read_conan, "hatexplain": read_hatexplain,
           "contrast": read_contrast, "feedback": read_feedback}


def read_source(spec: SourceSpec, root: Path) -> ReadResult:
    if spec.labels_for:
        raise ValueError(f"source {spec.name} only labels {spec.labels_for}'s rows: read it with read_label_table")
    if spec.reader == "hf":
        result = read_hf(spec, root)
    else:
        folder = source_dir(spec, root)
        if not folder.is_dir():
            where = "the repository (shipped)" if spec.shipped else f"data.root = {root}"
            raise FileNotFoundError(f"source {spec.name}: folder not found: {folder} ({where})")
        result = READERS[spec.reader](spec, folder)
    return result
