"""Batch prediction of a file (`tweetguard predict`): read a table, score its text column through the Predictor,
write the input columns plus `<policy>_probability`, `<policy>_flagged` and `<policy>_action` (none / review /
remove, the policy card's decision tiers) for every policy, in POLICIES order; with `--explain`, also
`<policy>_reasons` (the top words and their contributions, serving.reasons).

Formats by extension: .csv, .tsv, .jsonl (input and output). A row whose text is missing, empty, or not a
string is a bad row, reported with its file and line. Strict by default: any bad row fails the command before
anything is scored or written. With `skip_bad_rows`, bad rows are written with empty scores and counted.
The output is written to a temp file and renamed, so a failed run never leaves a partial output.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from serving.policies import POLICIES, output_columns, output_row
from serving.reasons import explain
from training.release.explain import reasons_cells
from training.data.tables import FORMATS, PREDICT, BadInputRow, describe_bad_rows, table_format

if TYPE_CHECKING:  # torch is imported only when scoring starts: input errors fail fast
    from serving.predictor import Predictor

CHUNK = 2048  # texts per Predictor call: bounds memory and drives the progress bar; sorting is per chunk

csv.field_size_limit(1 << 24)


@dataclass
class Table:
    columns: list[str]  # header order (JSONL: keys in order of first appearance)
    rows: list[dict[str, Any] | None]  # None: the line could not be parsed into a row at all
    lines: list[int]  # 1-based line where each row starts
    problems: dict[int, str] = field(default_factory=dict)  # row index -> why it is malformed


@dataclass
class PredictSummary:
    output: Path
    rows: int
    scored: int
    truncated: int
    bad_rows: list[BadInputRow]


def table_delimiter(path: Path) -> str | None:
    """The csv delimiter of `path`'s format (training.data.tables.FORMATS); None: JSON lines."""
    return FORMATS[table_format(path, PREDICT)].delimiter


def read_input(path: Path) -> Table:
    delimiter = table_delimiter(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheet exports start with a BOM
            return _read_jsonl(f, path) if delimiter is None else _read_delimited(f, path, delimiter)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _read_delimited(f, path: Path, delimiter: str) -> Table:
    reader = csv.reader(f, delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise ValueError(f"{path}: empty file, expected a header line")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise ValueError(f"{path}:1: duplicate column names {duplicates}")
    table = Table(columns=header, rows=[], lines=[])
    start = reader.line_num + 1
    for record in reader:
        if record:  # csv yields [] for a blank line
            if len(record) != len(header):
                table.problems[len(table.rows)] = f"has {len(record)} fields, the header has {len(header)}"
            table.rows.append(dict(zip(header, record)))
            table.lines.append(start)
        start = reader.line_num + 1  # a quoted field may span lines: the next record starts after this one
    return table


def _read_jsonl(f, path: Path) -> Table:
    table = Table(columns=[], rows=[], lines=[])
    seen: set[str] = set()
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row, table.problems[len(table.rows)] = None, f"not valid JSON ({e.msg})"
        except RecursionError:
            row, table.problems[len(table.rows)] = None, "not usable JSON (nested too deeply)"
        except ValueError as e:  # e.g. an integer past Python's int-string limit
            row, table.problems[len(table.rows)] = None, f"not usable JSON ({e})"
        if row is not None and not isinstance(row, dict):
            row, table.problems[len(table.rows)] = None, f"a JSON {type(row).__name__}, not an object"
        if row is not None and not _is_unicode(row):
            # JSON can spell a lone UTF-16 surrogate (\ud800): not text, and no UTF-8 output can hold it; the
            # service refuses it the same way (400 invalid_unicode).
            row = None
            table.problems[len(table.rows)] = "a lone UTF-16 surrogate (such as \\ud800), not valid Unicode"
        for key in row or {}:
            if key not in seen:
                seen.add(key)
                table.columns.append(key)
        table.rows.append(row)
        table.lines.append(number)
    return table


def _is_unicode(row: dict[str, Any]) -> bool:
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_bad_rows(table: Table, text_column: str, path: Path) -> list[BadInputRow]:
    """Every row that cannot be scored, with why. Raises if no row has the text column at all."""
    if text_column not in table.columns and table.columns:  # (no columns: nothing parsed, rows are bad)
        raise ValueError(f"{path}: no text column {text_column!r}; columns are {table.columns} (--text-column)")
    bad = []
    for i, (row, line) in enumerate(zip(table.rows, table.lines)):
        reason = table.problems.get(i) or _text_problem(row, text_column)
        if reason:
            bad.append(BadInputRow(line, reason))
    return bad


def _text_problem(row: dict[str, Any] | None, column: str) -> str | None:
    if row is None or column not in row:
        return f"no {column!r} field"
    text = row[column]
    if text is None:
        return f"{column!r} is null"
    if not isinstance(text, str):
        return f"{column!r} is {type(text).__name__} {json.dumps(text)[:40]}, not a string"
    if not text.strip():
        return f"{column!r} is empty"
    return None


@dataclass
class Job:
    """A checked input, ready to score: built before the model is loaded, so input mistakes fail fast."""

    input_path: Path
    output_path: Path
    output_format: str | None
    text_column: str
    table: Table
    bad_rows: list[BadInputRow]
    good: list[int]  # indices of the rows to score


def check_input(
    input_path: str | Path, output_path: str | Path, *, text_column: str = "text", skip_bad_rows: bool = False,
    explain: bool = False,
) -> Job:
    """Read and validate the input; raises (naming file, line, column) on anything that would stop scoring."""
    input_path, output_path = Path(input_path), Path(output_path)
    out_format = table_delimiter(output_path)
    if output_path.resolve() == input_path.resolve():
        raise ValueError(f"--output {output_path} is the input file; write the scores to a new file")
    table = read_input(input_path)
    clash = [c for c in output_columns(POLICIES) + (list(reasons_cells(None)) if explain else [])
             if c in table.columns]
    if clash:
        raise ValueError(f"{input_path}: already has output columns {clash} (an earlier output?); drop them")
    bad = find_bad_rows(table, text_column, input_path)
    if bad and not skip_bad_rows:
        raise ValueError(
            f"{input_path}: {len(bad)} of {len(table.rows)} rows have no usable text in column "
            f"{text_column!r}:\n{describe_bad_rows(bad, input_path)}\n"
            "fix them, or pass --skip-bad-rows to write them with empty scores"
        )
    bad_lines = {b.line for b in bad}
    good = [i for i, line in enumerate(table.lines) if line not in bad_lines]
    return Job(input_path, output_path, out_format, text_column, table, bad, good)


def predict_job(predictor: Predictor, job: Job, *, progress: bool | None = None,
                explain_top_k: int | None = None) -> PredictSummary:
    """Score the good rows and write the output (atomically). `explain_top_k`: also `<policy>_reasons` columns
    (serving.reasons, occlusion), that many words per policy."""
    table, column = job.table, job.text_column
    scores: dict[int, dict[str, Any]] = {}
    truncated = 0
    disable = None if progress is None else not progress  # tqdm: None = only on a terminal
    with tqdm(total=len(job.good), unit="text", desc="scoring", disable=disable) as bar:
        for start in range(0, len(job.good), CHUNK):
            idx = job.good[start : start + CHUNK]
            texts = [table.rows[i][column] for i in idx]
            found = explain(predictor, texts, top_k=explain_top_k) if explain_top_k else [None] * len(idx)
            for i, result, reasons in zip(idx, predictor.predict(texts), found):
                scores[i] = {**result, "reasons": reasons}
                truncated += result["truncated"]
            bar.update(len(idx))
    columns = table.columns + output_columns(predictor.policies) + (list(reasons_cells(None)) if explain_top_k
                                                                    else [])
    write_table(job.output_path, job.output_format, columns, _output_rows(table, scores, predictor.policies))
    return PredictSummary(job.output_path, len(table.rows), len(scores), truncated, job.bad_rows)


def input_texts(input_path: str | Path, text_column: str = "text") -> list[str]:
    """The texts of a .csv/.tsv/.jsonl file (`tweetguard explain --input`); any bad row fails, naming its line."""
    return table_texts(read_input(Path(input_path)), text_column, Path(input_path))


def table_texts(table: Table, text_column: str, input_path: Path) -> list[str]:
    """A read table's texts, in order; any bad row fails, naming its file and line."""
    bad = find_bad_rows(table, text_column, input_path)
    if bad:
        raise ValueError(f"{input_path}: {len(bad)} of {len(table.rows)} rows have no usable text in column "
                         f"{text_column!r}:\n{describe_bad_rows(bad, input_path)}")
    return [row[text_column] for row in table.rows]


def predict_file(
    predictor: Predictor,
    input_path: str | Path,
    output_path: str | Path,
    *,
    text_column: str = "text",
    skip_bad_rows: bool = False,
    progress: bool | None = None,
) -> PredictSummary:
    """Score `input_path` into `output_path` (check_input + predict_job)."""
    job = check_input(input_path, output_path, text_column=text_column, skip_bad_rows=skip_bad_rows)
    return predict_job(predictor, job, progress=progress)


def _output_rows(
    table: Table, scores: dict[int, dict[str, Any]], policies: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    for i, row in enumerate(table.rows):
        out = dict(row or {})
        out.update(output_row(scores.get(i), policies))
        if i in scores and scores[i]["reasons"] is not None:
            out.update(reasons_cells(scores[i]["reasons"]))
        yield out


def _cell(value: Any) -> str:
    # Delimited output: booleans as true/false (pandas and spreadsheets read them), nested JSON as JSON.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def write_table(path: Path, delimiter: str | None, columns: list[str], rows: Iterator[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            if delimiter is None:
                for row in rows:
                    f.write(json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n")
            else:
                writer = csv.writer(f, delimiter=delimiter)
                writer.writerow(columns)
                for row in rows:
                    writer.writerow([_cell(row.get(c)) for c in columns])
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written leftover beside the output
        raise
    os.replace(tmp, path)
