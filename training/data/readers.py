"""Readers: one source's files -> raw rows (`RawRow`), every malformed row a `BadRow` naming file and line.

A reader yields the text, a native id, the official split (or None: split-less sources get a seeded stratified
split later), and the raw label fields by name. It never decides policy labels: the declarative mapping in
`data/sources.yaml` does (`training.data.sources.map_labels`). Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from serving.preprocess import normalize_tweet
from training.config import ConfigError
from training.data.sources import BadRow, RawRow, ReadResult, SourceSpec

csv.field_size_limit(1 << 24)

_NON_WORD = re.compile(r"[\W_]+")


def text_key(text: str) -> str:
    """Dedup/join key: the normalized tweet without punctuation, so re-formatted copies of one text
    (`@USER` vs `@user`, a `URL` token, `&amp;`, spacing, emoji vs its name) collide."""
    return _NON_WORD.sub(" ", normalize_tweet(text)).strip()


_ENCODING_ERROR = re.compile("[\udc80-\udcff]")


def _records(path: Path, spec: SourceSpec, result: ReadResult) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a delimited file as dicts, checked for field count and encoding; repeated headers handled
    only where declared as a known defect."""
    quoting = csv.QUOTE_NONE if spec.quoting == "none" else csv.QUOTE_MINIMAL
    # surrogateescape keeps undecodable bytes visible so the row can be reported with its line.
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, delimiter=spec.delimiter, quoting=quoting)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty file")
        prev = reader.line_num
        for row in reader:
            line, prev = prev + 1, reader.line_num  # a quoted field may span lines: report where it starts
            if row == header:
                if "repeated_header" in spec.known_defects:
                    result.defects["repeated_header"] = result.defects.get("repeated_header", 0) + 1
                    continue
                result.bad.append(BadRow(str(path), line, "header line repeated mid-file"))
                continue
            if len(row) != len(header):
                result.bad.append(BadRow(str(path), line, f"{len(row)} fields, header has {len(header)}"))
                continue
            if any(_ENCODING_ERROR.search(v) for v in row):
                result.bad.append(BadRow(str(path), line, "not valid UTF-8"))
                continue
            yield line, dict(zip(header, row))


def _id_labels(path: Path, result: ReadResult) -> dict[str, str]:
    out: dict[str, str] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if len(row) != 2:
                result.bad.append(BadRow(str(path), line, f"expected id,label; got {len(row)} fields"))
            elif row[0] in out:
                result.bad.append(BadRow(str(path), line, f"id {row[0]} labeled twice"))
            else:
                out[row[0]] = row[1]
    return out


def _need(path: Path, key: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{key}: file not found: {path}")
    return path


def read_tabular(spec: SourceSpec, folder: Path) -> ReadResult:
    result = ReadResult()
    for i, f in enumerate(spec.files):
        path = _need(folder / f.path, f"source {spec.name} files[{i}].path")
        joined = {
            col: _id_labels(_need(folder / p, f"source {spec.name} files[{i}] labels"), result)
            for col, p in [(f.label_column, f.labels)] * bool(f.labels) + list(zip(f.extra_label_columns, f.extra_labels))
        }
        seen_ids: set[str] = set()
        for line, rec in _records(path, spec, result):
            for col in [spec.text_column] + [spec.id_column] * bool(spec.id_column):
                if col not in rec:
                    raise ValueError(f"source {spec.name}: column {col!r} not in {path} (has {sorted(rec)})")
            native_id = rec[spec.id_column] if spec.id_column else str(line)
            if native_id in seen_ids:
                result.bad.append(BadRow(str(path), line, f"duplicate id {native_id}"))
                continue
            seen_ids.add(native_id)
            fields = dict(rec)
            for col, labels in joined.items():
                fields[col] = labels.get(native_id, "")
            if f.labels and not fields[f.label_column]:
                result.bad.append(BadRow(str(path), line, f"id {native_id} has no label in {f.labels}"))
                continue
            result.rows.append(
                RawRow(spec.name, f"{f.subset or f.split or 'all'}/{native_id}", rec[spec.text_column],
                       f.split, f.subset, fields, str(path), line)
            )
    return result


def read_lines(spec: SourceSpec, folder: Path) -> ReadResult:
    """One text per line + one label per line (TweetEval)."""
    result = ReadResult()
    for i, f in enumerate(spec.files):
        key = f"source {spec.name} files[{i}]"
        texts = _need(folder / f.path, key + ".path").read_text(encoding="utf-8").split("\n")
        labels = _need(folder / (f.labels_text or ""), key + ".labels_text").read_text(encoding="utf-8").split("\n")
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
    for line, rec in _records(_need(folder / multi_f.path, f"source {spec.name} files[1].path"), spec, result):
        fields = {}
        for col in ("violence", "directed_vs_generalized"):
            value = _binary(rec[col], spec.binarize_at, BadRow(str(folder / multi_f.path), line, ""), result)
            if value is None:
                break
            fields[col] = value
        else:
            multi.setdefault(text_key(rec[spec.text_column]), (line, fields | {"text": rec[spec.text_column]}))
    path = _need(folder / binary_f.path, f"source {spec.name} files[0].path")
    for line, rec in _records(path, spec, result):
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
    path2 = _need(folder / stage2_f.path, f"source {spec.name} files[1].path")
    for line, rec in _records(path2, spec, result):
        classes = {rec["implicit_class"], rec["extra_implicit_class"]} - {""}
        value = "threatening" if "threatening" in classes else "other_implicit"
        stage2.setdefault(text_key(rec[spec.text_column]), (line, value, rec[spec.text_column]))
    path1 = _need(folder / stage1_f.path, f"source {spec.name} files[0].path")
    for line, rec in _records(path1, spec, result):
        _, value, _ = stage2.pop(text_key(rec[spec.text_column]), (0, "", ""))
        result.rows.append(RawRow(spec.name, f"stg1/{line}", rec[spec.text_column], None, "",
                                  {"class": rec["class"], "stage2": value}, str(path1), line))
    for line, value, text in stage2.values():
        result.rows.append(RawRow(spec.name, f"stg2/{line}", text, None, "",
                                  {"class": "implicit_hate", "stage2": value}, str(path2), line))
    if stage2:
        result.notes.append(f"{len(stage2)} stage-2 posts matched no stage-1 post: kept as implicit_hate rows")
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


READERS = {"table": read_tabular, "lines": read_lines, "ethos": read_ethos, "latent_hatred": read_latent_hatred}


def read_source(spec: SourceSpec, root: Path) -> ReadResult:
    if spec.reader == "hf":
        result = read_hf(spec, root)
    else:
        folder = root / spec.name
        if not folder.is_dir():
            raise FileNotFoundError(f"source {spec.name}: folder not found: {folder} (data.root = {root})")
        result = READERS[spec.reader](spec, folder)
    return result
