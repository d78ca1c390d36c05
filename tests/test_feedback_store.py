"""The feedback store (serving.feedback): Alembic schema, repeats, revisions, texts, purge, SQLite WAL."""

from __future__ import annotations

import sqlalchemy as sa

from serving.decisions import DecisionSigner
from serving.feedback import FeedbackStore, sqlite_url

SIGNER = DecisionSigner("k")
TEXT = "you are an idiot"


def _decision(text: str = TEXT) -> tuple[str, dict]:
    token = SIGNER.issue(model="tweetguard:v1", text=text, scores={"abusive": 0.9, "harassment": 0.2, "violence": 0.0},
                         thresholds={"abusive": 0.5, "harassment": 0.3, "violence": 0.3},
                         tiers={"abusive": {"review": 0.6, "remove": None}})
    return token, SIGNER.verify(token)


def test_schema_is_migrated_by_alembic_and_sqlite_runs_in_wal(tmp_path):
    url = sqlite_url(tmp_path / "data")
    store = FeedbackStore(url)
    FeedbackStore(url)  # a second open migrates nothing and keeps the rows
    with store.engine.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        assert c.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    assert store.rows() == []


def test_repeats_revisions_and_texts(tmp_path):
    store = FeedbackStore(sqlite_url(tmp_path))
    token, decision = _decision()
    first = store.record(decision_id=token, decision=decision, reviewer="ann", labels={"abusive": False},
                         note=None, text=None)
    assert first.new and first.revision == 1 and not first.usable_for_training  # no text: kept, not trainable
    again = store.record(decision_id=token, decision=decision, reviewer="ann", labels={"abusive": False},
                         note=None, text=None)
    assert not again.new and again.id == first.id  # identical repeat: nothing new
    appeal = store.record(decision_id=token, decision=decision, reviewer="ann",
                          labels={"abusive": True, "harassment": "unsure"}, note="on appeal", text=TEXT)
    assert appeal.new and appeal.revision == 2 and appeal.usable_for_training
    other = store.record(decision_id=token, decision=decision, reviewer="bob", labels={"violence": True},
                         note=None, text=None)
    assert other.revision == 1
    rows = store.rows()
    assert [(r["reviewer"], r["revision"]) for r in rows] == [("ann", 1), ("ann", 2), ("bob", 1)]
    assert rows[1]["labels"] == {"abusive": True, "harassment": "unsure"} and rows[1]["text"] == TEXT
    assert rows[0]["decision"]["scores"]["abusive"] == 0.9 and rows[0]["text_sha256"] == decision["text_sha256"]


def test_purge_deletes_what_was_received_before(tmp_path):
    store = FeedbackStore(sqlite_url(tmp_path))
    for i, at in enumerate((100.0, 200.0, 300.0)):
        token, decision = _decision(f"text {i}")
        store.record(decision_id=token, decision=decision, reviewer="r", labels={"abusive": True}, note=None,
                     text=f"text {i}", now=at)
    assert store.purge(before=250.0) == 2
    assert [r["received_at"] for r in store.rows()] == [300.0]


def test_purge_command_deletes_before_a_date_and_names_a_bad_one(tmp_path, capsys):
    from training.cli import main

    store = FeedbackStore(sqlite_url(tmp_path))
    for i, at in enumerate((1_700_000_000.0, 1_800_000_000.0)):  # 2023-11-14, 2027-01-15
        token, decision = _decision(f"t{i}")
        store.record(decision_id=token, decision=decision, reviewer="r", labels={"abusive": True}, note=None,
                     text=None, now=at)
    url = sqlite_url(tmp_path)
    assert main(["feedback", "purge", "--before", "2026-12-06", "--db", url]) == 0
    assert "deleted 1 verdicts" in capsys.readouterr().out and len(store.rows()) == 1
    assert main(["feedback", "purge", "--before", "last tuesday", "--db", url]) == 2
    assert "--before 'last tuesday'" in capsys.readouterr().err


def test_overturn_rates_per_policy_and_tier_use_each_reviewers_latest_verdict(tmp_path):
    from training.evaluation.monitor import overturn_lines, overturn_report

    store = FeedbackStore(sqlite_url(tmp_path))
    token, decision = _decision()  # abusive 0.9: flagged (0.5) and in its review tier (0.6); violence 0.0
    store.record(decision_id=token, decision=decision, reviewer="ann", labels={"abusive": True}, note=None, text=None)
    store.record(decision_id=token, decision=decision, reviewer="ann", labels={"abusive": False}, note="appeal",
                 text=None)  # ann's revision 2 replaces her first verdict
    store.record(decision_id=token, decision=decision, reviewer="bob", labels={"abusive": True, "violence": True},
                 note=None, text=None)
    t2, d2 = _decision("another text")
    store.record(decision_id=t2, decision=d2, reviewer="cy", labels={"abusive": "unsure"}, note=None, text=None)
    report = overturn_report(store.rows())["tweetguard:v1"]
    assert (report["abusive"]["upheld"], report["abusive"]["overturned"], report["abusive"]["unsure"]) == (1, 1, 1)
    assert report["abusive"]["overturn_rate"] == 0.5 and report["abusive"]["tiers"]["review"]["overturn_rate"] == 0.5
    assert report["violence"]["missed"] == 1 and report["violence"]["tiers"] == {}
    assert "| tweetguard:v1 | abusive | 3 | 1 / 1 | 0.500 | review 0.500 (2) | 0 | 1 |" in "\n".join(
        overturn_lines({"tweetguard:v1": report}))
