"""The contrast set (data/contrast/: posts this project wrote from docs/policies.md, in pairs with matched hard
negatives) -> raw rows. Its manifest (`manifest.yaml`) is the one declared file: it lists each batch with its
part (train / test), writer, instructions, row count and sha256, and the rows the near-duplicate rule dropped.

A batch whose bytes differ from its manifest sha256 stops the read (the manifest is what the data card hashes, so
the hash must cover the batches). Each row is linked to the first text of its pair (`RawRow.linked_text`), so
`group_split: pairs` keeps a pair on one side of the train / validation carve; the test part is test only. Labels
1 / 0 / "unsure" (read as unknown by the declaration's rules). A batch with `held: <why>` (an experiment rejected
it) stays listed, hashed and near-duplicate checked, but its rows are not read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from training.data.files import need
from training.data.sources import BadRow, RawRow, ReadResult, SourceSpec

FIELDS = ("id", "batch", "pair_id", "text", "abusive", "harassment", "violence", "kind")
PARTS = {"train": "train", "test": "test"}  # manifest part -> split


def read_manifest(path: Path) -> dict:
    manifest = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(manifest.get("batches"), list):
        raise ValueError(f"{path}: expected a `batches` list")
    return manifest


def batch_records(manifest_path: Path, bad: list[BadRow] | None = None):
    """Every row of every batch the manifest lists, dropped ones included: (batch entry, line, record). A batch
    whose bytes or row count differ from the manifest stops the read; a malformed line goes to `bad`."""
    manifest = read_manifest(manifest_path)
    for b in manifest["batches"]:
        path = need(manifest_path.parent / "batches" / f"{b['name']}.jsonl", f"{manifest_path}: batch {b['name']}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != b["sha256"]:
            raise ValueError(f"{path}: sha256 differs from {manifest_path.name} (a batch is kept as its writer "
                             f"wrote it; a change is a new batch)")
        if b.get("part") not in PARTS:
            raise ValueError(f"{manifest_path}: batch {b['name']}: part must be one of {sorted(PARTS)}")
        lines = data.decode("utf-8").splitlines()
        if len(lines) != b["rows"]:
            raise ValueError(f"{path}: {len(lines)} rows, manifest says {b['rows']}")
        for line, raw in enumerate(lines, start=1):
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                if bad is not None:
                    bad.append(BadRow(str(path), line, f"not JSON: {e.msg}"))
                continue
            missing = [k for k in FIELDS if k not in rec]
            if missing:
                if bad is not None:
                    bad.append(BadRow(str(path), line, f"missing field(s) {missing}"))
                continue
            yield b, path, line, rec


def read_contrast(spec: SourceSpec, folder: Path) -> ReadResult:
    result = ReadResult()
    for i, f in enumerate(spec.files):
        manifest_path = need(folder / f.path, f"source {spec.name} files[{i}].path")
        manifest = read_manifest(manifest_path)
        dropped = {d["id"] for d in manifest.get("dropped") or []}
        skipped = 0
        held = [b["name"] for b in manifest["batches"] if b.get("held")]
        first_of_pair: dict[str, str] = {}
        for b, path, line, rec in batch_records(manifest_path, result.bad):
            if rec["id"] in dropped:
                skipped += 1
                continue
            if b.get("held"):
                continue
            linked = first_of_pair.setdefault(f"{b['name']}/{rec['pair_id']}", rec["text"])
            result.rows.append(RawRow(
                spec.name, rec["id"], rec["text"], PARTS[b["part"]], b["part"],
                {p: str(rec[p]) for p in ("abusive", "harassment", "violence")}, str(path), line,
                linked_text=linked, origin=b["name"]))
        result.notes.append(f"{manifest_path.name}: {len(manifest['batches'])} batches, {skipped} rows left out by "
                            f"the near-duplicate rule (listed in `dropped`)"
                            + (f"; held, not read: {', '.join(held)}" if held else ""))
    return result
