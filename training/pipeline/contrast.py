"""Check the contrast set (data/contrast/) against every evaluation text and record what its near-duplicate rule
drops, in the manifest (`dropped`), so the reader skips those rows:

    python -m training.pipeline.contrast [--config configs/default.yaml] [--write]

Evaluation texts: the behaviour suite, and every validation and test text of every declared source (opt-in ones
included, DIALOCONAN too) as `tweetguard data` prepares them. A contrast row is dropped when its text key equals
one's, or their word sets (of the text keys) have a Jaccard similarity >= `JACCARD`; a train-part row is also
checked against every test-part row (the other writer's). Without --write it only prints the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from training.config import load_config, repo_root
from training.data.contrast import batch_records, read_manifest
from training.data.prepare import prepare
from training.data.sources import JACCARD, build_index, load_sources, similar, text_key
from training.evaluation.behaviour import load_suite

SOURCE = "contrast"


def check(config: str | None) -> tuple[list[dict], int]:
    """(the dropped rows, how many contrast rows were checked)."""
    cfg = load_config(config, [])
    names = [s.name for s in load_sources(cfg.data.sources_file) if s.opt_in]
    cfg = load_config(config, [f"data.opt_in=[{','.join(names)}]"])
    data = prepare(cfg.data, progress=True).dataset
    reference: list[tuple[str, str]] = [(text_key(c.text), f"behaviour suite {c.id}")
                                        for _, c in load_suite(cfg.evaluation.behaviour_suite).cases()]
    contrast = [(rec["id"], b["part"], text_key(rec["text"]), rec["text"])
                for b, _, _, rec in batch_records(repo_root() / "data" / "contrast" / "manifest.yaml")]
    for split in ("validation", "test"):
        for row in data[split]:
            if row["source"] != SOURCE:
                reference.append((text_key(row["text"]), f"{row['source']} {split} {row['id']}"))
    where = {key: what for key, what in reversed(reference)}
    index = build_index([key for key, _ in reference])
    test_part = build_index([key for _, split, key, _ in contrast if split == "test"])
    test_where = {key: f"contrast test {rid}" for rid, split, key, _ in contrast if split == "test"}
    dropped = []
    for rid, split, key, text in contrast:
        match = similar(key, index)
        what = where.get(match) if match else None
        if match is None and split != "test":
            match = similar(key, test_part)
            what = test_where.get(match) if match else None
        if match is not None:
            dropped.append({"id": rid, "text": text, "close_to": what, "key": match})
    return dropped, len(contrast)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pipeline.contrast", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (data and evaluation sections)")
    parser.add_argument("--write", action="store_true", help="record the dropped rows in the manifest")
    args = parser.parse_args(argv)
    dropped, n = check(args.config)
    print(f"{len(dropped)} of {n} contrast rows are near-duplicates of an evaluation text (Jaccard >= {JACCARD}):")
    for d in dropped:
        print(f"- {d['id']}: {d['text']!r} ~ {d['close_to']}")
    if args.write:
        path = repo_root() / "data" / "contrast" / "manifest.yaml"
        read_manifest(path)  # fails on a broken manifest before anything is written
        text = path.read_text(encoding="utf-8")
        head = text[:text.index("dropped:")]
        body = yaml.safe_dump([{k: d[k] for k in ("id", "close_to")} for d in dropped], allow_unicode=True,
                              sort_keys=False, width=115)
        path.write_text(head + "dropped:" + (" []\n" if not dropped else "\n" + body), encoding="utf-8")
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
