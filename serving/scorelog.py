"""Opt-in served score log (`TWEETGUARD_SCORE_LOG=<path.jsonl>`): one JSON line per scored text, what
`tweetguard monitor` compares with the model's validation scores to see drift in what is served.

A line holds the time (UTC), the model (name, BentoML store version, MLflow training run id and the sha256 of
its `policy_card.json`, which `tweetguard monitor` matches on: the same bytes in the registry and the store), the
endpoint, every policy's calibrated score and flag (at the thresholds that request used), the text's length in
characters and whether it was truncated. The text itself only with `TWEETGUARD_LOG_TEXTS` on.

The event loop only puts a reference to the request's results on a queue; a writer thread formats the lines and
appends them (buffered, flushed whenever the queue runs dry, so lines reach the file within milliseconds of a
request). `close()` (also at interpreter exit: a SIGTERM'd BentoML worker exits normally) writes what is queued
before returning. One writer per process: with several workers, give each its own file.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from serving.artifact import CARD_FILE, PolicyCard, file_sha256

_STOP = object()
logger = logging.getLogger("tweetguard.scorelog")


def model_fields(card: PolicyCard, version: str, model_dir: str | Path) -> dict[str, str | None]:
    """The `model` object of every line: what identifies the served model."""
    return {"name": card.model_name, "version": version, "run_id": card.mlflow_run_id,
            "card_sha256": file_sha256(Path(model_dir) / CARD_FILE)}


class ScoreLog:
    def __init__(self, path: str | Path, model: dict, *, log_texts: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.model, self.log_texts = model, log_texts
        self._file = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115 - closed in close()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tweetguard-scorelog", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def write(self, texts: Sequence[str], results: Sequence, endpoint: str) -> None:
        """Queue one request's texts and `TextResult`s (row-aligned); never blocks."""
        self._queue.put((datetime.now(timezone.utc), endpoint, texts, results))

    def close(self) -> None:
        """Write everything queued so far, then close the file (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _lines(self, when: datetime, endpoint: str, texts: Sequence[str], results: Sequence) -> str:
        stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out = []
        for text, r in zip(texts, results):
            line = {"time": stamp, "model": self.model, "endpoint": endpoint, "scores": r.scores, "flags": r.flags,
                    "length": len(text), "truncated": r.truncated}
            if self.log_texts:
                line["text"] = text
            out.append(json.dumps(line, ensure_ascii=False) + "\n")
        return "".join(out)

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                while item is not _STOP:
                    try:
                        self._file.write(self._lines(*item))
                    except OSError as e:  # e.g. disk full: say so, keep serving (and trying)
                        logger.error("score log %s: %d line(s) lost: %s", self.path, len(item[2]), e)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                try:
                    self._file.flush()  # the queue ran dry (or stop): lines reach the file now
                except OSError as e:
                    logger.error("score log %s: flush failed: %s", self.path, e)
                if item is _STOP:
                    return
        finally:
            self._file.close()
