"""`tweetguard label` (training.release.label) and feedback snapshots (training.data.feedback): the tasks and
labelling config written, annotations read back, snapshots immutable and content-hashed, the service's verdicts
frozen. The round trip through a real Label Studio server is in tests/test_label_studio.py."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from serving.policies import DESCRIPTIONS, POLICIES
from training.cli import main
from training.data.feedback import read_snapshot, snapshot_files, snapshots_hash, store_verdicts, write_snapshot
from training.release.label import instructions, label_config, verdicts

TEXTS = ["@sam you absolute clown", "lovely weather today", "I will find you and hurt you"]


def _sample(tmp_path):
    src = tmp_path / "sample.jsonl"
    src.write_text("".join(json.dumps({"text": t, "sample_rank": i}) + "\n" for i, t in enumerate(TEXTS, 1)))
    return src


def test_label_config_asks_each_policy_true_false_unsure_under_its_definition():
    root = ET.fromstring(label_config())
    choices = {c.get("name"): [x.get("value") for x in c] for c in root.iter("Choices")}
    assert choices == {p: ["true", "false", "unsure"] for p in POLICIES}
    assert all(c.get("toName") == "text" and c.get("required") == "true" for c in root.iter("Choices"))
    headers = [h.get("value") for h in root.iter("Header")]
    assert all(any(DESCRIPTIONS[p] in h for h in headers) for p in POLICIES)
    text = instructions()
    assert "How to judge a post" in text and "unsure" in text and "How these rules are used" not in text


def test_export_pre_annotates_with_the_model_or_writes_blind_tasks(tiny_artifact, tmp_path, capsys):
    src = _sample(tmp_path)
    out = tmp_path / "tasks.json"
    assert main(["label", "export", "--model", str(tiny_artifact), "--input", str(src), "--output", str(out)]) == 0
    tasks = json.loads(out.read_text())
    assert [t["data"]["text"] for t in tasks] == TEXTS and not any(t["data"]["blind"] for t in tasks)
    for t in tasks:
        (pred,) = t["predictions"]
        assert [r["from_name"] for r in pred["result"]] == list(POLICIES)
        for r in pred["result"]:  # the tiny artifact's thresholds are 0.5
            assert r["value"]["choices"] == ["true" if r["score"] >= 0.5 else "false"]
    assert (tmp_path / "tasks.label_config.xml").read_text() == label_config()
    assert "pre-annotated by" in capsys.readouterr().out

    blind = tmp_path / "blind.json"
    assert main(["label", "export", "--no-predictions", "--input", str(src), "--output", str(blind)]) == 0
    tasks = json.loads(blind.read_text())
    assert all(t["data"]["blind"] and "predictions" not in t for t in tasks)


def test_a_stratified_samples_weights_travel_from_sample_to_tasks_to_verdicts(tiny_artifact, tmp_path):
    texts = tmp_path / "texts.csv"
    words = ["rain", "match", "coffee", "idiot", "train", "garden", "clown", "movie", "exam", "dog"]
    texts.write_text("text\n" + "".join(f"the {a} and the {b} again\n" for a in words for b in words if a != b))
    sample, tasks_path = tmp_path / "sample.csv", tmp_path / "tasks.json"
    assert main(["sample", "--model", str(tiny_artifact), "--input", str(texts), "--n", "12", "--strategy",
                 "stratified", "--output", str(sample)]) == 0
    assert main(["label", "export", "--no-predictions", "--input", str(sample), "--output", str(tasks_path)]) == 0
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == len(sample.read_text().splitlines()) - 1 >= 3  # near repeats are sampled once
    assert all(t["data"]["sample_strategy"] == "stratified" for t in tasks)
    assert all(t["data"]["sample_weight"] >= 1 and ":" in t["data"]["sample_stratum"] for t in tasks)
    for t in tasks:  # a reviewer answers every task
        t["annotations"] = [{"id": t["data"]["row"], "completed_by": 1, "updated_at": "2026-12-07T10:00:00Z",
                             "result": [{"from_name": "abusive", "to_name": "text", "type": "choices",
                                         "value": {"choices": ["false"]}}]}]
    rows, _ = verdicts(tasks, "export.json")
    assert [(r["sample_stratum"], r["sample_weight"]) for r in rows] == [
        (t["data"]["sample_stratum"], t["data"]["sample_weight"]) for t in tasks]

    bad = tmp_path / "bad.csv"
    bad.write_text("text,sample_weight\nhello there,1.5\nyou clown,heavy\n")
    assert main(["label", "export", "--no-predictions", "--input", str(bad), "--output", str(tmp_path / "b.json")]) == 2
    assert not (tmp_path / "b.json").exists()
    with pytest.raises(ValueError, match=r"bad.csv: line 3: sample_weight 'heavy' is not a number"):
        from training.release.label import export
        export(bad, tmp_path / "b.json")


def _export(answers: list[dict], cancelled: bool = False) -> list[dict]:
    return [{"id": 7, "data": {"text": "@sam you absolute clown", "blind": True},
             "annotations": [{"id": 70 + i, "completed_by": {"id": 1, "email": f"r{i}@x.org"},
                              "was_cancelled": cancelled and i == 0, "updated_at": f"2026-12-0{i + 1}T10:00:00Z",
                              "result": [{"from_name": p, "to_name": "text", "type": "choices",
                                          "value": {"choices": [v]}} for p, v in a.items()]}
                             for i, a in enumerate(answers)]}]


def test_annotations_become_verdicts_and_cancelled_ones_are_counted():
    rows, cancelled = verdicts(_export([{"abusive": "true", "harassment": "unsure", "violence": "false"},
                                        {"abusive": "false", "harassment": "true", "violence": "false"}],
                                       cancelled=True), "export.json")
    assert cancelled == 1
    (row,) = rows
    assert row["labels"] == {"abusive": False, "harassment": True, "violence": False}
    assert row["reviewer"] == "label-studio:r1@x.org" and row["blind"] and row["item"] == "project?/task7"
    rows, _ = verdicts(_export([{"abusive": "true", "harassment": "unsure"}]), "e")
    assert rows[0]["labels"] == {"abusive": True, "harassment": "unsure"}  # a policy left unanswered is unknown
    assert rows[0]["labelled_at"] == "2026-12-01T10:00:00.000000+00:00"  # UTC, one format for every origin
    undated = _export([{"abusive": "true"}])
    del undated[0]["annotations"][0]["updated_at"]
    with pytest.raises(ValueError, match="task 7: annotation 70: updated_at / created_at None"):
        verdicts(undated, "e")


@pytest.mark.parametrize("answers, message", [
    ([{"hate": "true"}], "'hate' is not a policy"),
    ([{"abusive": "maybe"}], "abusive: ['maybe'] is not one of true, false, unsure"),
    ([{}], "no policy answered"),
])
def test_a_malformed_annotation_names_its_task_and_field_and_nothing_is_written(answers, message, tmp_path):
    bad = tmp_path / "export.json"
    bad.write_text(json.dumps(_export(answers)))
    with pytest.raises(ValueError, match="task 7: annotation 70"):
        verdicts(_export(answers), "export.json")
    assert main(["label", "import", "--input", str(bad), "--snapshots", str(tmp_path / "snaps")]) == 2
    assert not snapshot_files(tmp_path / "snaps")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        verdicts(_export(answers), "export.json")


def test_snapshots_are_content_hashed_written_once_and_refused_when_edited(tmp_path, capsys):
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_export([{"abusive": "true", "harassment": "true", "violence": "false"}])))
    snaps = tmp_path / "snaps"
    assert main(["label", "import", "--input", str(export), "--snapshots", str(snaps)]) == 0
    assert "written" in capsys.readouterr().out
    (path,) = snapshot_files(snaps)
    sha, rows = read_snapshot(path)
    assert path.name == f"feedback-{sha[:16]}.jsonl" and len(rows) == 1
    assert json.loads(path.with_suffix(".json").read_text())["sha256"] == sha
    assert main(["label", "import", "--input", str(export), "--snapshots", str(snaps)]) == 0
    assert "unchanged" in capsys.readouterr().out and len(snapshot_files(snaps)) == 1
    first = snapshots_hash(snaps)
    write_snapshot([dict(rows[0], reviewer="label-studio:other")], snaps, origin="label-studio", source="t")
    assert len(snapshot_files(snaps)) == 2 and snapshots_hash(snaps) != first
    path.chmod(0o644)
    path.write_text(path.read_text().replace("clown", "clowns"))
    with pytest.raises(ValueError, match="contents do not match the snapshot's name"):
        read_snapshot(path)


def test_the_services_verdicts_keep_each_reviewers_latest_revision_and_only_usable_ones():
    base = {"decision_sha256": "d1", "text_sha256": "t", "text": "you clown", "usable_for_training": True,
            "received_at": 1_765_000_000.0}
    stored = [dict(base, id=1, reviewer="ann", revision=0, labels={"abusive": True}),
              dict(base, id=2, reviewer="ann", revision=1, labels={"abusive": False}),
              dict(base, id=3, reviewer="bo", revision=0, labels={"abusive": True}),
              dict(base, id=4, reviewer="cy", revision=0, labels={"abusive": True}, text=None,
                   usable_for_training=False)]
    rows, unusable = store_verdicts(stored)
    assert unusable == 1
    assert sorted((r["reviewer"], r["labels"]["abusive"], r["verdict"]) for r in rows) == [
        ("feedback:ann", False, "2"), ("feedback:bo", True, "3")]
    assert all(not r["blind"] and r["origin"] == "feedback" for r in rows)
