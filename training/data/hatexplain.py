"""The HateXplain derivative's files (`id,post,label,target`, fields not quoted) -> raw rows. Decisions:
data/README.md, "CONAN and HateXplain".

Posts may contain commas, so a line is split on its first comma and its last two. Placeholders become our
spellings: `<user>` -> `@USER`, `<url>` -> `URL` (as every tweet source spells them, so `normalize_tweet`
treats them alike), any other `<word>` (`<number>`, `<censored>`, `<happy>`, ...) its bare word. The id suffix
(`_twitter` / `_gab`) is the row's `origin`, counted in the data card; an id with neither suffix is a malformed
row unless declared (`known_defects: {unknown_domain: N}`: origin `unknown`; the real files have 28 ids like
`<hex>_nf_3`). With `split_ids` every id is checked against the authors' official lists
(post_id_divisions.json): an id in another list or in none is a malformed row.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from training.data.files import need
from training.data.sources import BadRow, RawRow, ReadResult, SourceSpec

HEADER = "id,post,label,target"
DOMAINS = ("twitter", "gab")
_PLACEHOLDER = re.compile(r"<([a-z]+)>")
_OURS = {"user": "@USER", "url": "URL"}
_ENCODING_ERROR = re.compile("[\udc80-\udcff]")


def unplaceholder(text: str) -> str:
    return _PLACEHOLDER.sub(lambda m: _OURS.get(m[1], m[1]), text)


def split_line(line: str) -> tuple[str, str, str, str] | None:
    """`id,post,label,target` with commas allowed in the post; None if the line has fewer than three commas."""
    ident, sep, rest = line.partition(",")
    parts = rest.rsplit(",", 2)
    if not sep or len(parts) != 3:
        return None
    return ident, parts[0], parts[1], parts[2]


def read_hatexplain(spec: SourceSpec, folder: Path) -> ReadResult:
    result = ReadResult()
    listed: dict[str, str] = {}
    if spec.split_ids:
        divisions = json.loads(need(folder / spec.split_ids, f"source {spec.name} split_ids").read_text("utf-8"))
        listed = {post_id: subset for subset, ids in divisions.items() for post_id in ids}
    seen: set[str] = set()
    for i, f in enumerate(spec.files):
        path = need(folder / f.path, f"source {spec.name} files[{i}].path")
        subset = f.subset or f.split or "all"
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
            lines = fh.read().split("\n")
        if lines[0].rstrip("\r") != HEADER:
            raise ValueError(f"source {spec.name}: {path}: header {lines[0]!r}, expected {HEADER!r}")
        while lines and not lines[-1].strip():
            lines.pop()
        for n, raw in enumerate(lines[1:], start=2):
            raw = raw.rstrip("\r")
            parts = split_line(raw)
            reason = _problem(raw, parts, seen, listed, subset, spec.split_ids)
            if reason or parts is None:
                result.bad.append(BadRow(str(path), n, reason or "unparsed"))
                continue
            ident, post, label, target = parts
            seen.add(ident)
            domain = ident.rsplit("_", 1)[-1]
            if domain not in DOMAINS:
                if "unknown_domain" not in spec.known_defects:
                    result.bad.append(BadRow(str(path), n, f"id {ident!r} does not end in _twitter or _gab"))
                    continue
                result.defects["unknown_domain"] = result.defects.get("unknown_domain", 0) + 1
                domain = "unknown"
            result.rows.append(RawRow(spec.name, f"{subset}/{ident}", unplaceholder(post), f.split, f.subset,
                                      {"label": label, "target": target}, str(path), n, origin=domain))
    if unread := Counter(subset for post_id, subset in listed.items() if post_id not in seen):
        result.notes.append(f"{sum(unread.values())} ids of {spec.split_ids} have no row (posts the derivative "
                            f"dropped, e.g. without a majority label): "
                            + ", ".join(f"{k} {v}" for k, v in sorted(unread.items())))
    return result


def _problem(raw: str, parts, seen: set[str], listed: dict[str, str], subset: str, split_ids: str | None) -> str:
    """Why a line is malformed ('' if it is not)."""
    if _ENCODING_ERROR.search(raw):
        return "not valid UTF-8"
    if parts is None:
        return f"expected {HEADER} (split on the first comma and the last two), got {raw[:60]!r}"
    ident = parts[0]
    if not ident:
        return "empty id"
    if ident in seen:
        return f"duplicate id {ident}"
    if split_ids and listed.get(ident) != subset:
        where = f"the {listed[ident]!r} list" if ident in listed else "no list"
        return f"id {ident} is in {where} of {split_ids}, not {subset!r}"
    return ""
