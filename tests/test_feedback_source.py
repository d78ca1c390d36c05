"""The feedback source (data/sources.yaml `feedback`, reader training.data.feedback.read_feedback): snapshots in
`data.feedback` become one row per text, labelled by the reviewers' majority (unsure and ties unknown), split by
time (the latest texts are the test carve), blind-labelled texts marked; reviewer agreement is reported; a run
without `data.feedback` leaves the source out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from serving.policies import NEGATIVE, POSITIVE, UNKNOWN
from training.config import DataConfig, repo_root
from serving.decisions import text_sha256
from training.data.feedback import agreement, majority, write_snapshot
from training.data.prepare import prepare
from training.data.sources import load_sources

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


def _verdict(i: int, text: str, labels: dict, reviewer: str = "ann", blind: bool = False, item: str = "") -> dict:
    return {"text": text, "text_sha256": text_sha256(text), "labels": labels, "reviewer": reviewer,
            "labelled_at": (T0 + timedelta(hours=i)).isoformat(), "blind": blind, "origin": "label-studio",
            "item": item or f"task{i}", "verdict": f"{reviewer}{i}"}


def _sources(tmp_path):
    spec = next(s for s in load_sources(repo_root() / "data" / "sources.yaml") if s.name == "feedback")
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": [spec.model_dump(mode="json", exclude_defaults=True)]}))
    return path


def test_majority_and_agreement():
    assert majority([True, True, False]) == "1" and majority([False, "unsure"]) == "0"
    assert majority([True, False]) == "unknown" and majority(["unsure", None]) == "unknown"
    texts = [[{"reviewer": r, "labels": {"abusive": a}} for r, a in zip("ab", pair)]
             for pair in [(True, True), (False, False), (True, False), (False, False)]]
    alpha, units = agreement(texts)["abusive"]
    assert units == 4 and 0 < alpha < 1
    assert agreement(texts)["violence"] == (None, 0)


def test_snapshots_become_rows_split_by_time(tmp_path):
    verdicts = [_verdict(i, f"post number {i} about topic {i}", {"abusive": i % 2 == 0, "violence": False},
                         blind=i >= 15) for i in range(20)]
    # text 0: two more reviewers, one unsure -> the majority of true / false answers
    verdicts += [_verdict(30, verdicts[0]["text"], {"abusive": False, "harassment": "unsure"}, reviewer="bo",
                          item="task0"),
                 _verdict(31, verdicts[0]["text"], {"abusive": True, "harassment": "unsure"}, reviewer="cy",
                          item="task0")]
    folder = tmp_path / "snaps"
    write_snapshot(verdicts[:12], folder, origin="label-studio", source="a")
    write_snapshot(verdicts[8:], folder, origin="label-studio", source="b")  # overlapping: counted once
    cfg = DataConfig(root=str(tmp_path), sources_file=str(_sources(tmp_path)), cache_dir=str(tmp_path / "cache"),
                     feedback=str(folder))
    prepared = prepare(cfg)
    data = prepared.dataset
    rows = {r["text"]: (split, r) for split in data for r in data[split]}
    assert len(rows) == 20
    order = [v["text"] for v in verdicts[:20]]  # first verdicts an hour apart: time order
    assert [rows[t][0] for t in order] == ["train"] * 14 + ["validation"] * 2 + ["test"] * 4
    assert all(rows[t][1]["subset"] == "blind" for t in order[16:])
    split, first = rows[order[0]]
    assert list(first["labels"]) == [POSITIVE, UNKNOWN, NEGATIVE]  # 2 of 3 say abusive; harassment only unsure
    assert rows[order[1]][1]["labels"][0] == NEGATIVE
    notes = prepared.card.markdown
    assert "Krippendorff's alpha" in notes and "22 verdicts on 20 texts from 2 snapshots" in notes


def test_without_data_feedback_the_source_is_left_out_and_an_empty_folder_is_an_error(tmp_path):
    sources = _sources(tmp_path)
    (tmp_path / "other").mkdir()
    spec = yaml.safe_load(sources.read_text())["sources"]
    table = tmp_path / "t"
    table.mkdir()
    (table / "t.tsv").write_text("text\tlabel\n" + "".join(f"tweet {i} words\t{i % 2}\n" for i in range(40)))
    spec.append({"name": "t", "description": "a table", "license": "MIT", "files": [{"path": "t.tsv"}],
                 "policies": {"abusive": {"columns": ["label"], "positive": ["1"], "negative": ["0"]}}})
    sources.write_text(yaml.safe_dump({"sources": spec}))
    cfg = DataConfig(root=str(tmp_path), sources_file=str(sources), cache_dir=str(tmp_path / "cache"))
    prepared = prepare(cfg)
    assert {r["source"] for split in prepared.dataset for r in prepared.dataset[split]} == {"t"}
    assert "no data.feedback folder" in prepared.card.markdown
    with pytest.raises(FileNotFoundError, match="no feedback snapshots"):
        prepare(cfg.model_copy(update={"feedback": str(tmp_path / "other")}))
