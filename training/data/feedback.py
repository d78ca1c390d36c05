"""Feedback snapshots: human labels frozen into immutable, content-hashed files that training can cite.

A snapshot is `feedback-<sha256[:16]>.jsonl` in a snapshot folder, one verdict per line, with a manifest
`feedback-<sha256[:16]>.json` beside it ({"sha256", "rows", "created_at", "origin", "source"}). The name is
the hash of the file's bytes, so a snapshot never changes: writing the same verdicts again finds the file
already there and writes nothing; a file whose bytes no longer match its name is refused on read.

A verdict row: {"text", "text_sha256", "labels": {policy: true | false | "unsure"}, "reviewer", "labelled_at"
(ISO 8601, UTC), "blind" (labelled without the model's scores shown), "origin" ("label-studio" | "feedback"),
"item" (the origin's id of the labelled item: a Label Studio task, a decision), "verdict" (the origin's id of
this verdict: an annotation, a stored verdict)}.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from serving.decisions import text_sha256  # the hash decisions name a text by
from serving.policies import POLICIES
from training.data.sources import FileSpec, RawRow, ReadResult, SourceSpec, TimeSplit, text_key

PREFIX = "feedback-"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    sha256: str
    rows: int
    created: bool  # False: an identical snapshot was already there


def utc_iso(when: datetime | str) -> str:
    """A verdict's time as ISO 8601 in UTC, microseconds kept, so that times from every origin order as strings."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if not isinstance(when, datetime):
        raise ValueError(f"{when!r} is not a time")
    if when.tzinfo is None:
        raise ValueError(f"time {when.isoformat()} has no time zone")
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def check_row(row: dict[str, Any], where: str) -> None:
    """Raise ValueError naming `where` and the field when a verdict row is malformed."""
    for field in ("text", "labels", "reviewer", "labelled_at", "origin"):
        if field not in row:
            raise ValueError(f"{where}: missing field {field!r}")
    if not isinstance(row["text"], str) or not row["text"].strip():
        raise ValueError(f"{where}: field 'text' is empty")
    labels = row["labels"]
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{where}: field 'labels' must name at least one policy")
    for policy, value in labels.items():
        if policy not in POLICIES:
            raise ValueError(f"{where}: labels.{policy}: unknown policy (policies: {', '.join(POLICIES)})")
        if not (value is True or value is False or value == "unsure"):  # 1 / 0 are not answers
            raise ValueError(f"{where}: labels.{policy}: {value!r} is not true, false or \"unsure\"")


def _canonical(rows: Iterable[dict[str, Any]]) -> bytes:
    ordered = sorted(rows, key=lambda r: (r["labelled_at"], str(r.get("item", "")), str(r.get("verdict", ""))))
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in ordered).encode("utf-8")


def write_snapshot(rows: list[dict[str, Any]], folder: str | Path, *, origin: str, source: str) -> Snapshot:
    """Freeze `rows` into `folder` (created if needed); see the module. Rows are validated first: a bad row
    raises ValueError naming its position and field, and nothing is written."""
    if not rows:
        raise ValueError(f"no verdicts to snapshot from {source}")
    for i, row in enumerate(rows, 1):
        check_row(row, f"{source}: verdict {i}")
    data = _canonical(rows)
    sha = hashlib.sha256(data).hexdigest()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PREFIX}{sha[:16]}.jsonl"
    if path.exists():
        read_snapshot(path)  # an existing file must still be what its name says
        return Snapshot(path, sha, len(rows), created=False)
    manifest = {"sha256": sha, "rows": len(rows), "origin": origin, "source": source,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for target, payload in ((path.with_suffix(".json"), json.dumps(manifest, indent=1).encode() + b"\n"),
                            (path, data)):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    return Snapshot(path, sha, len(rows), created=True)


def read_snapshot(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """(sha256, rows) of one snapshot file; ValueError when its bytes do not match its name or a row is bad."""
    path = Path(path)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if not path.name.startswith(PREFIX) or path.stem[len(PREFIX):] != sha[:16]:
        raise ValueError(f"{path}: contents do not match the snapshot's name (sha256 {sha[:16]}): a snapshot is "
                         "never edited; write a new one")
    rows = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
        check_row(row, f"{path}:{n}")
        rows.append(row)
    return sha, rows


def snapshot_files(folder: str | Path) -> list[Path]:
    """The snapshot files in `folder`, by name (empty when the folder does not exist)."""
    folder = Path(folder)
    return sorted(folder.glob(f"{PREFIX}*.jsonl")) if folder.is_dir() else []


def snapshots_hash(folder: str | Path) -> str | None:
    """One hash for every snapshot in `folder` (sha256 over their sorted hashes); None when there is none.
    Tagged on every MLflow run that trains on feedback (`feedback.snapshots_sha256`)."""
    hashes = sorted(read_snapshot(p)[0] for p in snapshot_files(folder))
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest() if hashes else None


def store_verdicts(stored: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """(verdict rows, verdicts left out) from the service's feedback store (serving.feedback rows): a
    reviewer's latest revision of each decision, when it is usable for training (its text was sent and matched
    the decision). The moderators saw the model's decision, so none is blind."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in stored:
        key = (r["decision_sha256"], r["reviewer"])
        if key not in latest or r["revision"] >= latest[key]["revision"]:
            latest[key] = r
    rows, unusable = [], 0
    for r in latest.values():
        if not r["usable_for_training"] or not r["text"]:
            unusable += 1
            continue
        rows.append({"text": r["text"], "text_sha256": r["text_sha256"], "labels": r["labels"],
                     "reviewer": f"feedback:{r['reviewer']}",
                     "labelled_at": utc_iso(datetime.fromtimestamp(r["received_at"], timezone.utc)),
                     "blind": False, "origin": "feedback", "item": r["decision_sha256"], "verdict": str(r["id"])})
    return rows, unusable


def feedback_spec(spec: SourceSpec, folder: str | Path) -> SourceSpec:
    """The declared feedback source pointed at `folder` (data.feedback): its files are the snapshots there."""
    folder = Path(folder).expanduser().resolve()
    files = snapshot_files(folder)
    if not files:
        raise FileNotFoundError(f"data.feedback = {folder}: no feedback snapshots ({PREFIX}*.jsonl) there; write one "
                                "with `tweetguard label import` or `tweetguard feedback snapshot`")
    return spec.model_copy(update={"folder": str(folder), "shipped": False,
                                   "files": [FileSpec(path=p.name) for p in files]})


def majority(answers: list[Any]) -> str:
    """One policy's label from several reviewers: the majority of the true / false answers ("1" / "0"); a tie,
    or only "unsure", is "unknown" (never a negative)."""
    yes, no = sum(a is True for a in answers), sum(a is False for a in answers)
    return "1" if yes > no else "0" if no > yes else "unknown"


def agreement(by_text: list[list[dict[str, Any]]]) -> dict[str, tuple[float | None, int]]:
    """Per policy: (Krippendorff's alpha, nominal, "unsure" as missing; texts it is computed over), from the
    texts at least two reviewers answered true / false; alpha None when fewer than two such texts."""
    import krippendorff
    import numpy as np

    out = {}
    for policy in POLICIES:
        units = []
        for verdicts in by_text:
            answers = {v["reviewer"]: v["labels"].get(policy) for v in verdicts}
            answers = {r: a for r, a in answers.items() if a is True or a is False}
            if len(answers) >= 2:
                units.append(answers)
        if len(units) < 2:
            out[policy] = (None, len(units))
            continue
        reviewers = sorted({r for u in units for r in u})
        data = np.full((len(reviewers), len(units)), np.nan)
        for j, u in enumerate(units):
            for r, a in u.items():
                data[reviewers.index(r), j] = float(a)
        alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal") \
            if len(np.unique(data[~np.isnan(data)])) > 1 else 1.0
        out[policy] = (float(alpha), len(units))
    return out


def read_feedback(spec: SourceSpec, folder: Path) -> ReadResult:
    """Every snapshot of the folder -> one raw row per text (by text key): per policy the reviewers' majority,
    split by time (spec.time_split): texts in the order of their first verdict, the latest the test carve.
    A verdict seen in several snapshots counts once (its latest state: a revision or an edited annotation
    supersedes); the subset is `blind` when every verdict of the text was given without the model's view."""
    result = ReadResult()
    latest: dict[tuple, tuple[dict, str, int]] = {}
    for f in spec.files:
        path = folder / f.path
        _, rows = read_snapshot(path)
        for line, v in enumerate(rows, 1):
            key = (v["origin"], v["reviewer"], v.get("item") or v["text_sha256"])
            if key not in latest or v["labelled_at"] >= latest[key][0]["labelled_at"]:
                latest[key] = (v, str(path), line)
    groups: dict[str, list[tuple[dict, str, int]]] = {}
    for entry in latest.values():
        groups.setdefault(text_key(entry[0]["text"]), []).append(entry)
    ordered = sorted(groups.items(), key=lambda kv: (min(e[0]["labelled_at"] for e in kv[1]), kv[0]))
    split = spec.time_split or TimeSplit()
    n = len(ordered)
    n_test = round(n * split.test)
    n_val = round(n * split.validation)
    for i, (key, entries) in enumerate(ordered):
        verdicts = [e[0] for e in entries]
        part = "test" if i >= n - n_test else "validation" if i >= n - n_test - n_val else "train"
        first = min(entries, key=lambda e: e[0]["labelled_at"])
        fields = {p: majority([v["labels"].get(p) for v in verdicts]) for p in POLICIES}
        fields["reviewers"] = str(len({v["reviewer"] for v in verdicts}))
        blind = all(v.get("blind") for v in verdicts)
        result.rows.append(RawRow(spec.name, first[0]["text_sha256"][:16], first[0]["text"], part,
                                  "blind" if blind else "reviewed", fields, first[1], first[2],
                                  origin=first[0]["origin"]))
    counts = {p: sum(r.split == p for r in result.rows) for p in ("train", "validation", "test")}
    result.notes.append(f"{len(latest)} verdicts on {n} texts from {len(spec.files)} snapshots; split by time: "
                        f"train {counts['train']}, validation {counts['validation']}, test {counts['test']} "
                        f"(the latest; {sum(r.split == 'test' and r.subset == 'blind' for r in result.rows)} "
                        "blind-labelled)")
    for policy, (alpha, units) in agreement([[e[0] for e in g] for _, g in ordered]).items():
        result.notes.append(f"agreement {policy}: Krippendorff's alpha (nominal, unsure as missing) "
                            f"{'n/a' if alpha is None else f'{alpha:.3f}'} over {units} texts with 2+ reviewers")
    return result
