"""The served OpenAPI document (``GET /docs.json``), completed with what the request guard does.

BentoML writes the document from the API methods alone: each scoring route gets BentoML's generic 400/404/500
(``{"error": "<string>"}``, not the body the guard answers with) and a request schema flattened to the first
branch of every union (``input`` reads as a string only). `document` rewrites those parts from the facts the guard already holds: its routes and their
pydantic request models, whether a token is required, and `REFUSALS` below (every status
`serving.guard.Refusal` answers a POST with). `serving.guard.RequestGuard` applies it to BentoML's answer.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

DOCS_PATH = "/docs.json"
REF = "#/components/schemas/{model}"
ERROR = "Error"
BEARER = "bearer"

# Status -> why the guard refuses a POST to a scoring route with it (405 is for other methods: not an operation).
REFUSALS = {
    400: "Bad request: the body is not JSON, does not match the request schema, or breaks a limit (texts per "
         "request, characters per text); `error.param` names the field",
    401: "No bearer token (only when the service has TWEETGUARD_API_TOKEN set)",
    403: "Wrong bearer token (only when the service has TWEETGUARD_API_TOKEN set)",
    413: "Body larger than TWEETGUARD_MAX_BODY_BYTES",
    415: "Content-Type is not application/json",
    503: "Overloaded: too many requests in flight or the batch queue is full; retry after `Retry-After` seconds",
}
ERROR_SCHEMA = {  # serving.guard.Refusal.response, OpenAI's error shape
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "description": "what is wrong, naming the field"},
                "type": {"type": "string", "enum": ["invalid_request_error", "authentication_error",
                                                   "permission_error", "overloaded_error"]},
                "param": {"type": "string", "nullable": True, "description": "the field, e.g. texts[3]"},
                "code": {"type": "string", "description": "machine-readable reason, e.g. text_too_long"},
            },
        }
    },
}


def _openapi_30(schema: Any) -> Any:
    """pydantic's JSON Schema -> OpenAPI 3.0 (the document's version): ``anyOf [X, {type: null}]`` becomes
    X with ``nullable: true``; `$defs` references point at the document's components."""
    if isinstance(schema, list):
        return [_openapi_30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _openapi_30(v) for k, v in schema.items()}
    branches = out.get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


def document(spec: dict[str, Any], *, routes: dict[str, type[BaseModel]], auth: bool) -> dict[str, Any]:
    """BentoML's OpenAPI document with the guard's request schemas, refusals and auth."""
    spec = copy.deepcopy(spec)
    paths = spec.setdefault("paths", {})
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[ERROR] = ERROR_SCHEMA
    for path, model in routes.items():
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        body = model.model_json_schema(ref_template=REF)
        schemas.update({name: _openapi_30(s) for name, s in body.pop("$defs", {}).items()})
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _openapi_30(body)}}}
        responses = operation["responses"]
        responses.pop("404", None)  # BentoML's; the guard never answers a scoring route with it
        for status, why in REFUSALS.items():
            if status in (401, 403) and not auth:
                continue
            responses[str(status)] = {"description": why,
                                      "content": {"application/json": {"schema": {"$ref": REF.format(model=ERROR)}}}}
        if auth:
            operation["security"] = [{BEARER: []}]
    if auth:
        components.setdefault("securitySchemes", {})[BEARER] = {"type": "http", "scheme": "bearer"}
    return spec
