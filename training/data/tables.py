"""Tables the batch commands read and write, and how they report bad rows: one home for both.

`FORMATS` is the one table of file formats by suffix: `tweetguard predict` (training.release.predict, Python's csv
and json modules) and the Spark recipe (training.release.spark_score) each take the formats marked for them.
`BadInputRow` / `describe_bad_rows` are the bad-row report of `tweetguard predict` and of `tweetguard monitor`'s
score-log reader (training.evaluation.monitor): a file and line per row, the first `MAX_LISTED` listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREDICT, SPARK = "predict", "spark"  # who reads and writes a format
MAX_LISTED = 20  # bad rows listed in an error message; the count is always complete


@dataclass(frozen=True)
class TableFormat:
    delimiter: str | None  # the csv module's delimiter; None: not delimited text (JSON lines, Parquet)
    used_by: frozenset[str]  # PREDICT and / or SPARK


# Suffix -> format, for input and output. Order is the order error messages list them.
FORMATS = {
    ".parquet": TableFormat(None, frozenset({SPARK})),
    ".csv": TableFormat(",", frozenset({PREDICT, SPARK})),
    ".tsv": TableFormat("\t", frozenset({PREDICT})),
    ".jsonl": TableFormat(None, frozenset({PREDICT})),
}
_NOUN = {PREDICT: "file", SPARK: "table"}


def suffixes(user: str) -> tuple[str, ...]:
    """The suffixes `user` (PREDICT or SPARK) reads and writes."""
    return tuple(s for s, f in FORMATS.items() if user in f.used_by)


def table_format(path: str | Path, user: str) -> str:
    """The lowercased suffix of `path` if `user` handles it (a key of FORMATS); else ValueError naming the choices."""
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes(user):
        raise ValueError(f"{path}: unsupported {_NOUN[user]} type {suffix or '(none)'!r}; use one of "
                         f"{', '.join(suffixes(user))}")
    return suffix


@dataclass
class BadInputRow:
    line: int
    reason: str


def describe_bad_rows(bad: list[BadInputRow], path: Path) -> str:
    lines = [f"  {path}:{b.line}: {b.reason}" for b in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    return "\n".join(lines)
