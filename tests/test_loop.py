"""The human-in-the-loop round, end to end, with real parts: a tiny model trained and registered in MLflow, served
by a real `bentoml serve` with a real SQLite verdict store, a real Label Studio server.

served decisions -> verdicts through POST /feedback -> `tweetguard feedback snapshot` -> `tweetguard sample`
(uncertainty, labelled texts left out) -> `tweetguard label export` (pre-annotated; and a blind test carve) ->
reviewers label in Label Studio -> `tweetguard label import` -> train with `data.feedback` (the snapshots' hash
on the run) -> `tweetguard promote`, whose decision cites the feedback carve.
Reviewers answer by the rule the tiny sources are labelled with (tests/fixtures/tiny.py)."""

from __future__ import annotations

import csv
import json
import random

import httpx
import pytest
from mlflow import MlflowClient

from serving.feedback import FeedbackStore, sqlite_url
from serving.policies import POLICIES
from training.cli import main
from training.config import load_config
from training.data.feedback import snapshot_files, snapshots_hash
from training.pipeline.train import train
from training.tracking.refs import resolve_model_ref

pytestmark = pytest.mark.integration

TOKEN = "loop-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INSULTS, THREATS = {"stupid", "idiot", "ugly"}, {"kill", "hurt", "die"}
# Enough distinct words that two posts are never near repeats (the sampler samples a near repeat once).
FILLER = ("the game today was great love this song see you at work so tired what a day coffee rain bus train "
          "movie book garden dinner lunch music city park beach dog cat friend team match goal coach school class "
          "teacher phone laptop weekend morning night summer winter river mountain market shop pizza tea").split()


def _posts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.sample(FILLER, k=rng.randint(6, 10)) + [f"m{i}"]
        if rng.random() < 0.35:
            words.insert(rng.randrange(len(words)), rng.choice(sorted(INSULTS)))
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(sorted(THREATS)))
        if rng.random() < 0.4:
            words.insert(0, "@user")
        out.append(" ".join(words))
    return out


def _gold(text: str) -> dict[str, bool]:
    """The tiny sources' own rule: what a reviewer who reads the policies answers here."""
    words = text.split()
    abusive = bool(INSULTS & set(words))
    return {"abusive": abusive, "harassment": abusive and words[0] == "@user",
            "violence": bool(THREATS & set(words))}


def _label_all(ls, project: int) -> int:
    tasks = list(ls.tasks.list(project=project, fields="all"))
    for t in tasks:
        ls.annotations.create(id=t.id, result=[
            {"from_name": p, "to_name": "text", "type": "choices", "value": {"choices": [str(v).lower()]}}
            for p, v in _gold(t.data["text"]).items()])
    return len(tasks)


def _project(out: str) -> int:
    return int(out.split("Label Studio project ")[1].split(":")[0])


def test_the_loop(tmp_path, mlflow_uri, write_tiny_train_config, serve_tiny, label_studio, capsys):
    from label_studio_sdk import LabelStudio

    ls_url, ls_token = label_studio
    config = write_tiny_train_config(tmp_path, max_steps=24, eval_every_steps=12)
    first = train(load_config(config, ["run_name=champion"]), config_file=str(config), progress_bar=False)
    assert first.model_version == "1"  # the first version is @champion

    # 1. served decisions, and moderators' verdicts on some of them
    data_dir = tmp_path / "service"
    served = serve_tiny({"TWEETGUARD_API_TOKEN": TOKEN, "TWEETGUARD_DECISION_KEY": "loop-key",
                         "TWEETGUARD_DATA_DIR": str(data_dir)},
                        model_dir=resolve_model_ref("models:/tweetguard@champion", tracking_uri=mlflow_uri))
    posts = _posts(60)
    results = httpx.post(served.url + "/classify", json={"texts": posts}, headers=AUTH, timeout=60).json()["results"]
    for text, r in zip(posts[:12], results[:12]):
        answer = httpx.post(served.url + "/feedback", headers=AUTH, json={
            "decision_id": r["decision_id"], "labels": _gold(text), "reviewer": "mod-1", "text": text})
        assert answer.status_code == 201, answer.text
    db = sqlite_url(data_dir)
    assert len(FeedbackStore(db).rows()) == 12
    snaps = tmp_path / "snapshots"
    assert main(["feedback", "snapshot", "--db", db, "--snapshots", str(snaps)]) == 0

    # 2. what to label next: the champion's most uncertain served texts, never one already labelled
    pool = tmp_path / "served.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in posts))
    sample = tmp_path / "to-label.csv"
    assert main(["sample", "--input", str(pool), "--n", "16", "--strategy", "uncertainty", "--output", str(sample),
                 "--feedback-db", db]) == 0
    assert "12 texts already labelled" in capsys.readouterr().err
    with sample.open(newline="") as f:
        sampled = [row["text"] for row in csv.DictReader(f)]
    assert len(sampled) == 16 and not set(sampled) & set(posts[:12])

    # 3. Label Studio: the sample pre-annotated by the champion, then a blind carve labelled last
    assert main(["label", "export", "--input", str(sample), "--output", str(tmp_path / "tasks.json"),
                 "--url", ls_url, "--token", ls_token, "--title", "loop"]) == 0
    ls = LabelStudio(base_url=ls_url, api_key=ls_token)
    labelled = _project(capsys.readouterr().out)
    assert _label_all(ls, labelled) == 16
    assert main(["label", "import", "--url", ls_url, "--token", ls_token, "--project", str(labelled),
                 "--snapshots", str(snaps)]) == 0
    rest = [t for t in posts[12:] if t not in sampled]
    blind_input = tmp_path / "blind.jsonl"
    blind_input.write_text("".join(json.dumps({"text": t}) + "\n" for t in rest[:10]))
    assert main(["label", "export", "--no-predictions", "--input", str(blind_input), "--output",
                 str(tmp_path / "blind.json"), "--url", ls_url, "--token", ls_token, "--title", "blind"]) == 0
    blind = _project(capsys.readouterr().out)
    assert _label_all(ls, blind) == 10
    assert main(["label", "import", "--url", ls_url, "--token", ls_token, "--project", str(blind),
                 "--snapshots", str(snaps)]) == 0
    assert len(snapshot_files(snaps)) == 3

    # 4. retrain on the feedback: the run names the snapshots it learned from
    candidate = train(load_config(config, ["run_name=candidate", f"data.feedback={snaps}"]),
                      config_file=str(config), progress_bar=False)
    assert candidate.model_version == "2"
    run = MlflowClient(mlflow_uri).get_run(candidate.run_id)
    assert run.data.tags["feedback.snapshots_sha256"] == snapshots_hash(snaps)

    # 5. the promotion decision compares the two on the blind feedback carve too, and says so
    capsys.readouterr()
    assert main(["promote", "--config", str(config), "--candidate", "models:/tweetguard/2", "--no-test",
                 f"data.feedback={snaps}", "evaluation.bootstrap_samples=200"]) == 0
    out = capsys.readouterr().out
    assert "feedback carve (" in out and "blind-labelled texts)" in out, out
    evidence = json.loads(MlflowClient(mlflow_uri).get_model_version("tweetguard", "2").tags["promotion.evidence"])
    # 38 texts by time: the latest 8 (20%) are the test carve, all of them blind-labelled
    assert evidence["feedback"]["rows"] == 8 and set(evidence["feedback"]) == {"rows", *POLICIES}
