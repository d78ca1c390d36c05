"""ASGI middleware in front of the scoring endpoints: auth, overload, size and input checks, JSON errors.

Why a middleware and not checks inside the API methods: BentoML reads and parses the whole body before an
API method runs, and answers its own parse errors with a generic message. Here the body limit is enforced
while the body streams in (before any parsing), and every refusal is a JSON error naming the field, in
OpenAI's error shape so the ``openai`` client surfaces the message:
``{"error": {"message", "type", "param", "code"}}``. Messages never quote the texts.

A request that passes is handed on with its body replayed, and BentoML parses it with the same pydantic
model, which cannot fail then.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from serving.metrics import record_refusal
from serving.openapi import DOCS_PATH, document
from serving.reasons import split_words
from serving.schemas import ServiceSettings

FEEDBACK_PATH = "/feedback"

logger = logging.getLogger("tweetguard.guard")

_SURROGATE = re.compile("[\ud800-\udfff]")


class Refusal(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        record_refusal(self.status, self.code)  # every refusal goes out through here
        kind = {401: "authentication_error", 403: "permission_error", 503: "overloaded_error"}
        body = {
            "error": {
                "message": self.message,
                "type": kind.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_refusal(e: ValidationError) -> Refusal:
    err = e.errors(include_input=False, include_url=False)[0]
    param = _loc(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    message = msg if msg.startswith(param.split("[")[0].split(".")[0]) else f"{param}: {msg}"
    code = {"extra_forbidden": "unknown_field", "missing": "missing_field"}.get(err["type"], "invalid_value")
    return Refusal(400, message, param=param, code=code)


def check_texts(req: Any, settings: ServiceSettings) -> None:
    """Per-text limits that depend on settings (the pydantic models check types and shapes)."""
    texts = req.items()
    if not texts:
        field = req.field_name(0).split("[")[0]
        raise Refusal(400, f"{field}: the list is empty, give at least one text", param=field, code="empty")
    if len(texts) > settings.max_texts:
        field = req.field_name(0).split("[")[0]
        raise Refusal(
            400,
            f"{field}: {len(texts)} texts, the limit is {settings.max_texts} per request (TWEETGUARD_MAX_TEXTS)",
            param=field,
            code="too_many_texts",
        )
    for i, text in enumerate(texts):
        field = req.field_name(i)
        if not text.strip():
            raise Refusal(400, f"{field}: empty text", param=field, code="empty")
        if len(text) > settings.max_chars:
            raise Refusal(
                400,
                f"{field}: {len(text)} characters, the limit is {settings.max_chars} (TWEETGUARD_MAX_CHARS)",
                param=field,
                code="text_too_long",
            )
        if _SURROGATE.search(text):
            # JSON can spell them (\ud800) but they are not Unicode text; BentoML's parser rejects them too.
            raise Refusal(400, f"{field}: contains a lone UTF-16 surrogate, not valid Unicode", param=field,
                          code="invalid_unicode")
    if getattr(req, "explain", False):
        words = sum(len(split_words(t)) for t in texts)
        if words > settings.explain_max_words:
            raise Refusal(400, f"explain: {words} words in this request, the limit is {settings.explain_max_words} "
                          "words explained per request (TWEETGUARD_EXPLAIN_MAX_WORDS); send fewer texts",
                          param="explain", code="too_many_words")


def check_feedback(req: Any, settings: ServiceSettings) -> None:
    """The settings' limits on a verdict (the pydantic model checks types and shapes)."""
    if req.note is not None and len(req.note) > settings.max_note_chars:
        raise Refusal(400, f"note: {len(req.note)} characters, the limit is {settings.max_note_chars} "
                      "(TWEETGUARD_MAX_NOTE_CHARS)", param="note", code="note_too_long")
    if req.text is not None and len(req.text) > settings.max_chars:
        raise Refusal(400, f"text: {len(req.text)} characters, the limit is {settings.max_chars} "
                      "(TWEETGUARD_MAX_CHARS)", param="text", code="text_too_long")


class RequestGuard:
    """``routes`` maps a public scoring path to its request model; other paths pass through untouched.
    ``queue_refusal()`` says why the batch queue would refuse a request arriving now (None: admit); it is asked
    before the body is read, so an overloaded server refuses at the cost of the headers."""

    def __init__(self, app, *, settings: ServiceSettings, routes: dict[str, type[BaseModel]], token: str | None,
                 queue_refusal: Callable[[], str | None] | None = None):
        self.app, self.settings, self.routes, self.queue_refusal = app, settings, routes, queue_refusal
        self.token = token.encode() if token else None
        self.inflight = 0

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == DOCS_PATH and scope["method"] == "GET":
            return await self._openapi(scope, receive, send)
        if scope["type"] != "http" or path not in self.routes:
            return await self.app(scope, receive, send)
        try:
            self._check_method(scope)
            if path == FEEDBACK_PATH and self.token is None:
                raise Refusal(404, "POST /feedback is off: it needs TWEETGUARD_API_TOKEN (anyone who can post "
                              "feedback can change what the model is retrained on)", code="feedback_off")
            self._check_auth(scope)
            if self.inflight >= self.settings.max_inflight:
                raise Refusal(
                    503,
                    f"overloaded: {self.inflight} requests in flight, the limit is {self.settings.max_inflight} "
                    "(TWEETGUARD_MAX_INFLIGHT); retry later",
                    code="overloaded",
                    headers={"Retry-After": "1"},
                )
            if path != FEEDBACK_PATH and self.queue_refusal is not None and (why := self.queue_refusal()) is not None:
                raise Refusal(503, why, code="overloaded", headers={"Retry-After": "1"})
        except Refusal as r:
            logger.info("refused %s %s: %s %s", scope["method"], path, r.status, r.code)
            return await r.response()(scope, receive, send)
        self.inflight += 1
        try:
            try:
                body = await self._read_json(scope, receive, self.routes[path])
            except Refusal as r:
                logger.info("refused %s %s: %s %s (%s)", scope["method"], path, r.status, r.code, r.param)
                return await r.response()(scope, receive, send)
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.inflight -= 1

    async def _openapi(self, scope, receive, send) -> None:
        """BentoML's OpenAPI document, completed with this guard's schemas, refusals and auth (serving.openapi)."""
        start: dict = {}
        chunks: list[bytes] = []

        async def keep(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        if start.get("status") != 200:  # pass BentoML's own error through as it was
            await send(start)
            return await send({"type": "http.response.body", "body": b"".join(chunks)})
        spec = document(json.loads(b"".join(chunks)), routes=self.routes,
                        auth=self.token is not None)
        await JSONResponse(spec)(scope, receive, send)

    def _check_method(self, scope) -> None:
        if scope["method"] != "POST":
            raise Refusal(405, f"{scope['path']} accepts POST only", code="method_not_allowed",
                          headers={"Allow": "POST"})

    def _check_auth(self, scope) -> None:
        if self.token is None:
            return
        headers = dict(scope["headers"])
        scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Refusal(401, "missing bearer token: send 'Authorization: Bearer <token>'", param="Authorization",
                          code="unauthorized", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode("latin-1"), self.token):
            raise Refusal(403, "invalid bearer token", param="Authorization", code="forbidden")

    async def _read_json(self, scope, receive, model: type[BaseModel]) -> bytes:
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise Refusal(415, f"Content-Type must be application/json, got {ctype or 'none'!r}",
                          param="Content-Type", code="unsupported_media_type")
        limit = self.settings.max_body_bytes
        too_big = Refusal(413, f"body larger than {limit} bytes (TWEETGUARD_MAX_BODY_BYTES)", param="body",
                          code="body_too_large")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        while True:  # stream in, stop as soon as the limit is crossed (chunked bodies declare no length)
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refusal(400, "client disconnected while sending the body", code="disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            data = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise Refusal(400, f"body is not UTF-8 (byte {e.start})", param="body", code="invalid_json") from None
        except json.JSONDecodeError as e:
            raise Refusal(400, f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                          param="body", code="invalid_json") from None
        except RecursionError:  # arrays / objects nested ~1,000 deep: no request of ours nests beyond 4
            raise Refusal(400, "body is nested too deeply", param="body", code="invalid_json") from None
        except ValueError as e:  # e.g. an integer past Python's int-string limit (4,300 digits)
            raise Refusal(400, f"body is not usable JSON: {e}", param="body", code="invalid_json") from None
        try:
            req = model.model_validate(data)
        except ValidationError as e:
            raise validation_refusal(e) from None
        except RecursionError:
            raise Refusal(400, "body is nested too deeply", param="body", code="invalid_json") from None
        if hasattr(req, "items"):  # the scoring routes
            check_texts(req, self.settings)
        else:
            check_feedback(req, self.settings)
        return body
