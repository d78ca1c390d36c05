"""The Label Studio round trip against a real Label Studio server (the `label-studio` package in `.venv-label`,
made by `make label-studio`; SQLite, loopback): `tweetguard label export --url` creates the project with the
config, the instructions and the tasks (pre-annotated, or blind), two reviewers answer through the API, and
`tweetguard label import --url --project` freezes their answers into a snapshot."""

from __future__ import annotations

import json

import pytest

from serving.policies import POLICIES
from training.cli import main
from training.data.feedback import read_snapshot, snapshot_files
from training.release.label import label_config

pytestmark = pytest.mark.integration


def _answer(ls, task_id: int, labels: dict[str, str], user: int | None = None) -> None:
    result = [{"from_name": p, "to_name": "text", "type": "choices", "value": {"choices": [v]}}
              for p, v in labels.items()]
    kwargs = {} if user is None else {"completed_by": user}
    ls.annotations.create(id=task_id, result=result, **kwargs)


def test_round_trip_through_a_real_label_studio(label_studio, tiny_artifact, tmp_path, capsys):
    from label_studio_sdk import LabelStudio

    url, token = label_studio
    texts = ["@sam you absolute clown", "lovely weather today", "say that again and you'll need a dentist"]
    sample = tmp_path / "sample.csv"
    # a stratified sample's columns: its stratum and weight travel through Label Studio into every verdict
    sample.write_text("text,sample_rank,sample_strategy,sample_stratum,sample_weight\n" + "".join(
        f'"{t}",{i},stratified,abusive:0.{2 * i}-0.{2 * i + 2},{i}.5\n' for i, t in enumerate(texts, 1)))
    assert main(["label", "export", "--model", str(tiny_artifact), "--input", str(sample),
                 "--output", str(tmp_path / "tasks.json"), "--url", url, "--token", token,
                 "--title", "pre-annotated"]) == 0
    project = int(capsys.readouterr().out.split("Label Studio project ")[1].split(":")[0])
    ls = LabelStudio(base_url=url, api_key=token)
    got = ls.projects.get(id=project)
    assert got.label_config.strip() == label_config().strip() and "How to judge a post" in got.expert_instruction
    tasks = list(ls.tasks.list(project=project, fields="all"))
    assert sorted(t.data["text"] for t in tasks) == sorted(texts)
    for t in tasks:  # the model's flags arrive as predictions, one answer per policy
        (pred,) = t.predictions
        assert sorted(r["from_name"] for r in pred.result) == sorted(POLICIES)

    # a second reviewer answers the first text too: both verdicts are kept
    second = ls.users.create(username="reviewer2", email="reviewer2@tweetguard.test").id
    by_text = {t.data["text"]: t.id for t in tasks}
    _answer(ls, by_text[texts[0]], {"abusive": "true", "harassment": "true", "violence": "false"})
    _answer(ls, by_text[texts[0]], {"abusive": "true", "harassment": "unsure", "violence": "false"}, user=second)
    _answer(ls, by_text[texts[1]], {"abusive": "false", "harassment": "false", "violence": "false"})
    snaps = tmp_path / "snaps"
    assert main(["label", "import", "--url", url, "--token", token, "--project", str(project),
                 "--snapshots", str(snaps)]) == 0
    (path,) = snapshot_files(snaps)
    _, rows = read_snapshot(path)
    assert len(rows) == 3 and not any(r["blind"] for r in rows)  # the unanswered task gives no verdict
    first = sorted((r["reviewer"], json.dumps(r["labels"], sort_keys=True)) for r in rows if r["text"] == texts[0])
    assert len({who for who, _ in first}) == 2
    assert {"abusive": True, "harassment": "unsure", "violence": False} in [json.loads(x) for _, x in first]
    assert all(r["sample_strategy"] == "stratified" for r in rows)
    assert {(r["text"], r["sample_stratum"], r["sample_weight"]) for r in rows} == {
        (texts[0], "abusive:0.2-0.4", 1.5), (texts[1], "abusive:0.4-0.6", 2.5)}

    # the test carve: blind tasks, no predictions, marked blind in every verdict
    assert main(["label", "export", "--no-predictions", "--input", str(sample),
                 "--output", str(tmp_path / "blind.json"), "--url", url, "--token", token,
                 "--title", "blind"]) == 0
    blind = int(capsys.readouterr().out.split("Label Studio project ")[1].split(":")[0])
    blind_tasks = list(ls.tasks.list(project=blind, fields="all"))
    assert all(not t.predictions for t in blind_tasks)
    _answer(ls, blind_tasks[0].id, {"abusive": "false", "harassment": "false", "violence": "true"})
    assert main(["label", "import", "--url", url, "--token", token, "--project", str(blind),
                 "--snapshots", str(snaps)]) == 0
    new = [p for p in snapshot_files(snaps) if p != path]
    (row,) = read_snapshot(new[0])[1]
    assert row["blind"] and row["labels"]["violence"] is True


def test_a_wrong_token_is_a_clear_error_and_writes_nothing(label_studio, tmp_path, capsys):
    url, _ = label_studio
    assert main(["label", "import", "--url", url, "--token", "wrong", "--project", "1",
                 "--snapshots", str(tmp_path / "snaps")]) != 0
    assert not snapshot_files(tmp_path / "snaps")
