"""The opt-in served score log (serving.scorelog): its lines, no texts unless asked, nothing lost at exit, and the
real service writing it (`TWEETGUARD_SCORE_LOG`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving.artifact import CARD_FILE, file_sha256, read_card
from serving.policies import POLICIES
from serving.schemas import ServiceSettings, TextResult
from serving.scorelog import ScoreLog, model_fields
from training.config import repo_root

TEXTS = ["you are a stupid idiot", "have a good day 🌞", "i will find you and hurt you"]
MODEL = {"name": "tiny", "version": "v1", "run_id": None, "card_sha256": "ab" * 32}


def result(i: int) -> TextResult:
    scores = {p: round(0.1 * (i + j), 3) for j, p in enumerate(POLICIES)}
    return TextResult(scores=scores, flags={p: s >= 0.2 for p, s in scores.items()},
                      actions={p: "none" for p in POLICIES}, truncated=i == 2)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_setting_is_read_from_the_environment():
    assert ServiceSettings.from_env({}).score_log is None
    assert ServiceSettings.from_env({"TWEETGUARD_SCORE_LOG": "/var/log/tg.jsonl"}).score_log == "/var/log/tg.jsonl"


def test_one_line_per_text_and_no_text_by_default(tmp_path):
    log = ScoreLog(tmp_path / "sub" / "scores.jsonl", MODEL)
    log.write(TEXTS, [result(i) for i in range(3)], "classify")
    log.write(TEXTS[:1], [result(0)], "moderations")
    log.close()
    lines = read_lines(tmp_path / "sub" / "scores.jsonl")
    assert len(lines) == 4
    first = lines[0]
    assert set(first) == {"time", "model", "endpoint", "scores", "flags", "length", "truncated"}  # no "text"
    assert first["model"] == MODEL and first["endpoint"] == "classify" and first["time"].endswith("Z")
    assert [line["length"] for line in lines] == [len(t) for t in TEXTS] + [len(TEXTS[0])]  # characters, not bytes
    assert lines[1]["scores"] == result(1).scores and lines[1]["flags"] == result(1).flags
    assert [line["truncated"] for line in lines] == [False, False, True, False]
    assert lines[3]["endpoint"] == "moderations"
    assert not any(t in (tmp_path / "sub" / "scores.jsonl").read_text(encoding="utf-8") for t in TEXTS)


def test_texts_only_when_asked(tmp_path):
    log = ScoreLog(tmp_path / "scores.jsonl", MODEL, log_texts=True)
    log.write(TEXTS, [result(i) for i in range(3)], "classify")
    log.close()
    assert [line["text"] for line in read_lines(tmp_path / "scores.jsonl")] == TEXTS


def test_appends_and_loses_nothing_at_interpreter_exit(tmp_path):
    # A fresh process queues 2,000 requests and exits without calling close(): the atexit hook drains the queue.
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps({"earlier": "line"}) + "\n", encoding="utf-8")
    code = ("import sys; from serving.scorelog import ScoreLog; from serving.schemas import TextResult\n"
            "r = TextResult(scores={'abusive': .1, 'harassment': .2, 'violence': .3}, flags={'abusive': False, "
            "'harassment': False, 'violence': True}, actions={'abusive': 'none', 'harassment': 'none', 'violence': "
            "'none'}, truncated=False)\n"
            "log = ScoreLog(sys.argv[1], {'name': 'tiny'})\n"
            "for i in range(2000): log.write(['a' * 5, 'bb'], [r, r], 'classify')\n")
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=repo_root(), check=True, timeout=60)
    lines = read_lines(path)
    assert lines[0] == {"earlier": "line"} and len(lines) == 1 + 4000
    assert [line["length"] for line in lines[-2:]] == [5, 2]


@pytest.mark.integration
def test_the_service_logs_what_it_served(serve_tiny, tiny_artifact, tmp_path):
    path = tmp_path / "served.jsonl"
    served = serve_tiny({"TWEETGUARD_SCORE_LOG": str(path)})
    classify = httpx.post(served.url + "/classify", json={"texts": TEXTS}, timeout=30)
    moderation = httpx.post(served.url + "/v1/moderations", json={"input": TEXTS[0]}, timeout=30)
    assert classify.status_code == moderation.status_code == 200
    served.stop()  # SIGTERM: a clean shutdown
    lines = read_lines(path)
    assert [line["endpoint"] for line in lines] == ["classify"] * 3 + ["moderations"]
    card = read_card(tiny_artifact)
    version = classify.json()["model"]["version"]
    assert lines[0]["model"] == model_fields(card, version, tiny_artifact)
    assert lines[0]["model"]["card_sha256"] == file_sha256(tiny_artifact / CARD_FILE)
    for line, want in zip(lines, classify.json()["results"]):
        assert line["scores"] == want["scores"] and line["flags"] == want["flags"]
    assert "text" not in lines[0]
