"""Generated inputs (hypothesis): whatever a client or a file holds, the request guard and schemas, and the
readers of `tweetguard predict`, either accept it or answer our documented error (HTTP: a 4xx JSON error whose
message names the field; files: ValueError naming the file and line), never another exception; and no Unicode,
however odd, crashes `normalize_tweet` or the Predictor's tokenizer path.

The guard runs in-process as the ASGI middleware it is; behind it stands a plain ASGI app that records what the
guard let through (BentoML's place). The served HTTP path is covered in test_generated_requests.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from serving.guard import RequestGuard
from serving.policies import POLICIES
from serving.predictor import Predictor
from serving.preprocess import normalize_tweet
from serving.schemas import ClassifyRequest, ModerationRequest, PolicyThresholds, ServiceSettings, split_overrides
from training.release.predict import check_input, predict_job

LIMITS = ServiceSettings(max_texts=8, max_chars=300, max_body_bytes=20_000)
ROUTES = {"/classify": ClassifyRequest, "/v1/moderations": ModerationRequest}

# ---- strategies ---------------------------------------------------------------------------------------------
# Characters no text should break on: controls and NUL, bidi and zero-width controls, combining marks, the
# replacement and non-characters, the last code point, tags, emoji, and lone UTF-16 surrogates (hypothesis'
# own alphabets leave surrogates out; JSON can spell them as \ud800).
NASTY = ["\x00", "\x07", "\x7f", "\u0085", "\u00ad", "\u0301", "\u036f", "\u200b", "\u200d", "\u202e", "\u2066",
         "\u2069", "\ufeff", "\ufffd", "\uffff", "\U0010ffff", "\U000e0041", "\U0001f52b", "\ud800", "\udbff",
         "\udc00", "\udfff", "&amp;", "&#0;", "&#x110000;", "@", "http://", "URL", "\r\n", "\t", '"', "\\", ","]
PIECE = st.one_of(st.characters(), st.sampled_from(NASTY), st.integers(0xD800, 0xDFFF).map(chr),
                  st.text(max_size=8))
TEXT = st.lists(PIECE, max_size=12).map("".join)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=10)
WORDS = st.text(st.characters(), min_size=1, max_size=30) | TEXT  # mostly scorable, some nasty
NUMBER = st.floats(0, 1) | st.floats() | st.integers(-2, 2) | st.sampled_from([-0.0, 1e-300, 1 + 1e-12, True])
NUMBER = NUMBER | TEXT
TIER = st.fixed_dictionaries({}, optional={k: NUMBER | st.none() | JSON for k in ("flag", "review", "remove",
                                                                                  "x")})
THRESHOLDS = st.dictionaries(st.sampled_from(POLICIES) | TEXT, st.floats(0, 1) | TIER | NUMBER | JSON, max_size=4)
CLASSIFY = st.one_of(  # near-valid shapes first, so that most requests reach the deeper checks
    st.fixed_dictionaries({"texts": st.lists(WORDS, max_size=10)}, optional={"thresholds": THRESHOLDS}),
    st.fixed_dictionaries({"text": WORDS}, optional={"thresholds": THRESHOLDS}),
    st.fixed_dictionaries({}, optional={"texts": st.lists(WORDS | JSON, max_size=3) | JSON, "text": WORDS | JSON,
                                        "thresholds": THRESHOLDS | JSON, "lang": JSON}))
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | JSON},
                             optional={"text": WORDS | JSON, "image_url": JSON})
MODERATION = st.one_of(
    st.fixed_dictionaries({"input": WORDS | st.lists(WORDS, max_size=10)}, optional={"model": TEXT}),
    st.fixed_dictionaries({"input": st.lists(WORDS | PART, max_size=10)}),
    st.fixed_dictionaries({}, optional={"input": JSON, "model": JSON, "user": JSON}))
REQUEST = st.one_of(st.tuples(st.just("/classify"), CLASSIFY), st.tuples(st.just("/v1/moderations"), MODERATION),
                    st.tuples(st.sampled_from(sorted(ROUTES)), JSON))


@pytest.fixture(scope="module")
def predictor(tiny_artifact: Path) -> Predictor:
    return Predictor.load(tiny_artifact, path="reference")


# ---- the request guard and schemas --------------------------------------------------------------------------
def _through_guard(path: str, body: bytes) -> tuple[int, dict | None, bytes | None]:
    """(status, JSON error or None, the body BentoML would get or None) for one POST through the guard."""
    passed: list[bytes] = []

    async def app(scope, receive, send):  # where BentoML stands: takes the replayed body, answers 200
        passed.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    guard = RequestGuard(app, settings=LIMITS, routes=ROUTES, token=None)
    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", b"application/json")]}
    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, (None if passed else json.loads(payload)["error"]), (passed[0] if passed else None)


def _assert_parses_or_names_the_field(path: str, body: bytes, predictor: Predictor) -> None:
    status, error, passed = _through_guard(path, body)
    event(f"{path}: {status} {error['code'] if error else 'accepted'}")
    if passed is None:
        assert 400 <= status < 500, (status, error)
        assert error["type"] == "invalid_request_error" and error["code"], error
        field = (error["param"] or "body").split("[")[0].split(".")[0]
        assert field in error["message"], error
        return
    assert status == 200 and passed == body
    req = ROUTES[path].model_validate(json.loads(passed))  # what BentoML parses, with the same model
    texts = req.items()
    assert texts and all(isinstance(t, str) and t.strip() and len(t) <= LIMITS.max_chars for t in texts)
    assert not any(re.search("[\ud800-\udfff]", t) for t in texts)
    if path == "/classify":  # what the service does next must not fail either (it would be a 500)
        flags, tiers = split_overrides(req.thresholds)
        predictor.thresholds(flags), predictor.tiers(tiers)


@settings(max_examples=600)
@given(request=REQUEST)
def test_any_json_body_parses_or_is_a_4xx_naming_the_field(predictor, request):
    path, body = request
    # json.dumps writes lone surrogates as \udxxx escapes and non-finite floats as NaN / Infinity, as a
    # hand-made body may.
    _assert_parses_or_names_the_field(path, json.dumps(body).encode(), predictor)


@settings(max_examples=300)
@given(request=REQUEST, cut=st.integers(0, 200), junk=st.binary(max_size=8))
def test_any_bytes_body_parses_or_is_a_4xx_naming_the_field(predictor, request, cut, junk):
    path, body = request
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")  # raw surrogates: not UTF-8
    _assert_parses_or_names_the_field(path, raw[:cut] + junk + raw[cut:], predictor)


@settings(max_examples=300)
@given(value=TIER)
def test_policy_thresholds_parse_into_tiers_the_predictor_takes(predictor, value):
    try:
        t = PolicyThresholds.model_validate(value)
    except ValueError:  # pydantic's ValidationError; the guard turns it into a 400 (tested above)
        return
    flags, tiers = split_overrides({"violence": t})
    assert predictor.thresholds(flags)["violence"] == (t.flag if t.flag is not None else predictor.card.thresholds[
        "violence"])
    assert predictor.tiers(tiers)["violence"] == {**predictor.card.tier_thresholds["violence"], **tiers.get(
        "violence", {})}


# ---- the readers of `tweetguard predict` --------------------------------------------------------------------
def _assert_reads_or_names_file_and_line(predictor: Predictor, src: Path, tmp_path: Path) -> None:
    """Strict mode fails with ValueError naming `src` (and, for bad rows, `src:line`); skip mode scores and
    writes every usable row. Any other exception fails the test."""
    out = tmp_path / f"out{src.suffix}"
    try:
        check_input(src, out)
    except ValueError as e:
        assert str(src) in str(e), e
        if "rows have no usable text" in str(e):
            assert re.search(rf"{re.escape(str(src))}:\d+: ", str(e)), e
    try:
        job = check_input(src, out, skip_bad_rows=True)
    except ValueError as e:  # what skipping cannot fix: encoding, header, no text column
        assert str(src) in str(e), e
        return
    summary = predict_job(predictor, job, progress=False)
    assert summary.scored == len(job.good) and out.is_file()


LINE = st.one_of(  # one JSONL line: an object with a text, any JSON, or not JSON at all
    st.fixed_dictionaries({"text": WORDS | JSON}, optional={"id": JSON, "note": TEXT}).map(json.dumps),
    JSON.map(json.dumps), TEXT, st.just("[" * 3000 + "]" * 3000), st.just('{"text": 1' + "0" * 5000 + "}"))


@settings(max_examples=150)
@given(lines=st.lists(LINE, max_size=6), bom=st.booleans(), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_any_jsonl_file_scores_or_names_file_and_line(predictor, tmp_path_factory, lines, bom, newline):
    tmp = tmp_path_factory.mktemp("jsonl")
    src = tmp / "in.jsonl"
    text = ("\ufeff" if bom else "") + newline.join(lines) + newline
    src.write_bytes(text.encode("utf-8", "surrogatepass"))  # a raw surrogate in a line: not UTF-8
    _assert_reads_or_names_file_and_line(predictor, src, tmp)


CELL = st.one_of(WORDS, st.sampled_from(['"', '""', '"a,b"', "a\nb", "\r", "\x00", "\t", ",", "", "text"]), TEXT)


@settings(max_examples=150)
@given(suffix=st.sampled_from([".csv", ".tsv"]), header=st.lists(CELL, max_size=4),
       rows=st.lists(st.lists(CELL, max_size=5), max_size=5), junk=st.binary(max_size=6), at=st.integers(0, 300))
def test_any_delimited_file_scores_or_names_file_and_line(predictor, tmp_path_factory, suffix, header, rows, junk,
                                                          at):
    tmp = tmp_path_factory.mktemp("delimited")
    src = tmp / f"in{suffix}"
    sep = "," if suffix == ".csv" else "\t"
    raw = "\n".join(sep.join(cells) for cells in [header or ["text"], *rows]).encode("utf-8", "surrogatepass")
    src.write_bytes(raw[:at] + junk + raw[at:])  # undecodable bytes anywhere, unbalanced quotes, NULs
    _assert_reads_or_names_file_and_line(predictor, src, tmp)


# ---- arbitrary Unicode through normalization and the tokenizer ----------------------------------------------
LONG = 100_000
EXPLICIT = [  # the cases a strategy finds rarely: long tokens, long runs of one odd character, every plane
    "a" * LONG, "🔪" * LONG, "e" + "\u0301" * LONG, "@" * LONG, "http://" + "x" * LONG, "&amp;" * (LONG // 5),
    "\x00" * LONG, "\ud800" * LONG, "\udc80\ud800" * 10, "\ud83d", "\ude00\ud83d", "\u202e\u2066" * LONG,
    "".join(chr(c) for c in range(0, 0x110000, 97)), "\U000e0001\U000e0041\U000e007f", "\ufeff\ufffe\uffff",
    "@user " * (LONG // 6), "rt " * (LONG // 3) + "@a", "\u0000\u0085\u2028\u2029 \x1c\x1d\x1e\x1f",
]


def _assert_clean(out: str) -> None:
    assert isinstance(out, str) and out == out.strip()
    out.encode("utf-8")  # no lone surrogates left: the tokenizer, logs and JSON output get valid text
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]", out)


@settings(max_examples=500)
@given(text=TEXT | st.text(st.characters(codec=None), max_size=200))
def test_normalize_tweet_takes_any_unicode(text):
    _assert_clean(normalize_tweet(text))


@pytest.mark.parametrize("text", EXPLICIT, ids=[f"nasty{i}" for i in range(len(EXPLICIT))])
def test_normalize_tweet_takes_nasty_text(text):
    _assert_clean(normalize_tweet(text))


@settings(max_examples=60)
@given(texts=st.lists(TEXT | st.text(st.characters(codec=None), max_size=200), min_size=1, max_size=8))
def test_predictor_scores_any_unicode(predictor, texts):
    rows = predictor.predict(texts)
    assert len(rows) == len(texts)
    assert all(0.0 <= p <= 1.0 for row in rows for p in row["scores"].values())


def test_predictor_scores_nasty_text(predictor):
    rows = predictor.predict(EXPLICIT)
    assert len(rows) == len(EXPLICIT) and all(0.0 <= p <= 1.0 for row in rows for p in row["scores"].values())
    assert not rows[0]["truncated"]  # one 100k-letter word: WordPiece makes it a single [UNK]
    assert rows[EXPLICIT.index("&amp;" * (LONG // 5))]["truncated"]  # 20k "&" tokens: past the 32-token window
