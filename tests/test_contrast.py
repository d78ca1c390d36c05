"""The contrast set (data/contrast/): its manifest is the declared file, every batch is checked against its
sha256, dropped rows stay out, the train part keeps each pair on one side of the validation carve and the test
part (another writer's batches) is test only."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from training.config import DataConfig, repo_root
from training.data.contrast import batch_records, read_manifest
from training.data.prepare import prepare
from training.data.readers import read_source
from training.data.sources import load_sources, text_key
from training.evaluation.behaviour import load_suite
from training.data.sources import build_index, similar

CONTRAST = repo_root() / "data" / "contrast"


def contrast_spec():
    return next(s for s in load_sources(repo_root() / "data" / "sources.yaml") if s.name == "contrast")


def test_the_shipped_set_reads_with_its_manifest(tmp_path):
    manifest = read_manifest(CONTRAST / "manifest.yaml")
    result = read_source(contrast_spec(), tmp_path)  # shipped: read from the repository, not data.root
    dropped = {d["id"] for d in manifest["dropped"]}
    held = {b["name"] for b in manifest["batches"] if b.get("held")}
    # C01 and writer D's six: their screens failed. Listed and checked, not read.
    assert held == {"C01-implicit-group-hate", "D01-threats-gendered", "D02-threats-registers", "D03-wish-harm",
                    "D04-insults-talked-about", "D05-casual-profanity", "D06-counter-arguments"}
    kept = [rec["id"] for b, _, _, rec in batch_records(CONTRAST / "manifest.yaml") if b["name"] not in held]
    assert not result.bad
    assert sorted(r.native_id for r in result.rows) == sorted(set(kept) - dropped)
    assert not held & {r.origin for r in result.rows}
    assert not dropped & {r.native_id for r in result.rows}
    parts = {b["name"]: b["part"] for b in manifest["batches"]}
    assert {r.split for r in result.rows if parts[r.origin] == "test"} == {"test"}
    assert {r.split for r in result.rows if parts[r.origin] == "train"} == {"train"}
    # the test part is another writer's: no batch is in both parts, and no writer either
    writers = {part: {b["writer"] for b in manifest["batches"] if b["part"] == part} for part in ("train", "test")}
    assert not writers["train"] & writers["test"]
    for b in manifest["batches"]:
        assert (CONTRAST / b["instructions"]).is_file(), b["instructions"]


def test_a_changed_batch_is_refused(tmp_path):
    copy = tmp_path / "contrast"
    shutil.copytree(CONTRAST, copy)
    batch = next((copy / "batches").glob("*.jsonl"))
    batch.write_bytes(batch.read_bytes().replace(b'"abusive": 0', b'"abusive": 1', 1))
    with pytest.raises(ValueError, match="sha256 differs"):
        list(batch_records(copy / "manifest.yaml"))


def contrast_only(tmp_path) -> DataConfig:
    """A data config whose only source is the shipped contrast set (an empty data root beside it)."""
    root = tmp_path / "datasets"
    root.mkdir()
    spec = contrast_spec().model_dump(mode="json", exclude_defaults=True)
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"sources": [dict(spec, opt_in=False)]}))
    return DataConfig(root=str(root), sources_file=str(sources), cache_dir=str(tmp_path / "cache"))


def test_pairs_stay_on_one_side_of_the_validation_carve(tmp_path):
    data = prepare(contrast_only(tmp_path)).dataset
    split_of = {r["id"].split(":", 1)[1]: split for split in data for r in data[split]}
    assert {"train", "validation", "test"} == set(split_of.values())
    pairs: dict[str, set[str]] = {}
    for b, _, _, rec in batch_records(CONTRAST / "manifest.yaml"):
        if rec["id"] in split_of:
            pairs.setdefault(f"{b['name']}/{rec['pair_id']}", set()).add(split_of[rec["id"]])
    assert all(len(splits) == 1 for splits in pairs.values())


def test_the_near_duplicate_rule():
    index = build_index([text_key("I'm going to break every bone in your hand"), text_key("lovely day")])
    assert similar(text_key("@kwame I'm going to break every bone in your hand!!"), index)  # Jaccard >= 0.5
    assert similar(text_key("LOVELY DAY"), index) == text_key("lovely day")  # equal keys
    assert similar(text_key("the match tonight was a massacre, 5-0"), index) is None


def test_no_row_of_the_set_is_a_behaviour_suite_case():
    """The full check against every evaluation text needs the shared data (python -m training.pipeline.contrast);
    the behaviour suite ships here, so this part runs everywhere."""
    suite = load_suite(repo_root() / "data" / "behaviour_suite.yaml")
    index = build_index([text_key(case.text) for _, case in suite.cases()])
    dropped = {d["id"] for d in read_manifest(CONTRAST / "manifest.yaml")["dropped"]}
    close = [rec["id"] for _, _, _, rec in batch_records(CONTRAST / "manifest.yaml")
             if rec["id"] not in dropped and similar(text_key(rec["text"]), index)]
    assert not close, close


def test_every_row_has_every_field_and_a_known_label():
    for _, path, line, rec in batch_records(CONTRAST / "manifest.yaml"):
        for policy in ("abusive", "harassment", "violence"):
            assert rec[policy] in (0, 1, "unsure"), f"{path}:{line}: {policy}={json.dumps(rec[policy])}"


def test_a_train_share_keeps_whole_pairs(tmp_path):
    """data.train_share (the learning curve's 25 / 50%) samples whole pairs: a kept positive keeps its hard
    negative, and about the share of the train part is kept."""
    cfg = contrast_only(tmp_path)
    full = {r["id"] for r in prepare(cfg).dataset["train"]}
    half = {r["id"] for r in prepare(cfg.model_copy(update={"train_share": {"contrast": 0.5}})).dataset["train"]}
    assert half < full and abs(len(half) - len(full) / 2) <= 4  # a component is a pair (rarely a few rows)
    pairs: dict[str, set[bool]] = {}
    for b, _, _, rec in batch_records(CONTRAST / "manifest.yaml"):
        if f"contrast:{rec['id']}" in full:
            pairs.setdefault(f"{b['name']}/{rec['pair_id']}", set()).add(f"contrast:{rec['id']}" in half)
    assert len(pairs) > 400 and all(len(kept) == 1 for kept in pairs.values())  # both rows kept, or neither
