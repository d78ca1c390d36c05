"""Reading a source's files: delimited records checked for field count and encoding, id,label files, and
required files. Every malformed line becomes a `BadRow` naming the file and line (used by `training.data.readers`)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from training.data.sources import BadRow, ReadResult, SourceSpec

csv.field_size_limit(1 << 24)

_ENCODING_ERROR = re.compile("[\udc80-\udcff]")


def records(path: Path, spec: SourceSpec, result: ReadResult) -> Iterator[tuple[int, dict[str, str]]]:
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


def id_labels(path: Path, result: ReadResult) -> dict[str, str]:
    """An id,label file (no header) as {id: label}; malformed and repeated ids are bad rows."""
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


def need(path: Path, key: str) -> Path:
    """`path`, or FileNotFoundError naming the declaration key that asked for it."""
    if not path.is_file():
        raise FileNotFoundError(f"{key}: file not found: {path}")
    return path
