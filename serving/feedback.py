"""The feedback store: moderators' verdicts on served decisions (`POST /feedback`), kept durably.

Any SQLAlchemy URL (`TWEETGUARD_FEEDBACK_DB`); by default SQLite in WAL mode in the service's data directory. The
schema is created and migrated by Alembic (`serving/migrations/`) when the store opens. Each verdict is committed
before the request is answered, so a SIGTERM loses nothing that was acknowledged.

A verdict names a decision by its signed `decision_id` (serving.decisions, verified by the caller) and gives a
label per policy (true / false / "unsure"), so a policy the model missed can be reported too. Rules:
- the text is stored only if its sha256 is the decision's; without it the verdict is stored and marked unusable
  for training (never dropped);
- an identical repeat (same decision, reviewer, labels, note and text) stores nothing new;
- a changed verdict by the same reviewer on the same decision is stored as the next revision (appeals);
- `purge(before)` deletes the verdicts received before a time (stored texts are personal data); the service also
  applies `TWEETGUARD_FEEDBACK_RETENTION_DAYS` on start-up and on every write.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

MIGRATIONS = Path(__file__).parent / "migrations"
LABELS = (True, False, "unsure")

@dataclass
class Stored:
    id: int
    revision: int
    new: bool  # False: an identical repeat, nothing stored
    usable_for_training: bool


def sqlite_url(data_dir: str | Path) -> str:
    path = Path(data_dir).expanduser() / "feedback.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class FeedbackStore:
    def __init__(self, url: str):
        self.url = url
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":
            @sa.event.listens_for(self.engine, "connect")
            def _wal(dbapi_connection, _record):  # readers never block the writer; durable at each commit
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
                cursor.close()
        self.migrate()
        # The table as the migrations made it (reflected: the schema lives in serving/migrations alone).
        self.verdicts = sa.Table("verdicts", sa.MetaData(), autoload_with=self.engine)

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def record(self, *, decision_id: str, decision: dict, reviewer: str, labels: dict, note: str | None,
               text: str | None, now: float | None = None) -> Stored:
        """Store one verdict on a verified decision (`decision`: its payload); see the module's rules."""
        key, _verdicts = hashlib.sha256(decision_id.encode("utf-8")).hexdigest(), self.verdicts
        labels_json = json.dumps(labels, sort_keys=True)
        with self.engine.begin() as c:
            last = c.execute(sa.select(_verdicts).where(_verdicts.c.decision_sha256 == key,
                                                        _verdicts.c.reviewer == reviewer)
                             .order_by(_verdicts.c.revision.desc()).limit(1)).mappings().first()
            if last is not None and (last["labels"], last["note"]) == (labels_json, note) and (
                    text is None or last["text"] == text):
                return Stored(last["id"], last["revision"], False, last["usable_for_training"])
            revision = 1 if last is None else last["revision"] + 1
            usable = text is not None or (last is not None and last["text"] is not None)
            kept_text = text if text is not None else (None if last is None else last["text"])
            row = c.execute(sa.insert(_verdicts).values(
                decision_sha256=key, decision=json.dumps(decision, sort_keys=True), model=decision["model"],
                text_sha256=decision["text_sha256"], reviewer=reviewer, labels=labels_json, note=note,
                text=kept_text, usable_for_training=usable, revision=revision,
                received_at=time.time() if now is None else now))
            return Stored(int(row.inserted_primary_key[0]), revision, True, usable)

    def purge(self, before: float) -> int:
        """Delete every verdict received before `before` (UTC seconds); returns how many."""
        with self.engine.begin() as c:
            return c.execute(sa.delete(self.verdicts).where(self.verdicts.c.received_at < before)).rowcount

    def rows(self) -> list[dict]:
        """Every stored verdict, oldest first (labels and decision parsed)."""
        with self.engine.connect() as c:
            out = [dict(r) for r in c.execute(sa.select(self.verdicts).order_by(self.verdicts.c.id)).mappings()]
        for r in out:
            r["labels"], r["decision"] = json.loads(r["labels"]), json.loads(r["decision"])
        return out

    def close(self) -> None:
        self.engine.dispose()
