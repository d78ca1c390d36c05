"""Generated requests (schemathesis) against a real `bentoml serve` of the tiny model with auth on: built from the
service's own OpenAPI document, schema-conforming and schema-breaking bodies alike, each answered within 5 s by a
documented 2xx / 4xx whose body matches its documented schema, never a 5xx. Plus lone UTF-16 surrogates sent as
JSON escapes (\\ud800), which no generator makes, through both scoring endpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode

from benchmarks.soak import generated_requests

pytestmark = pytest.mark.integration

TOKEN = "generated-requests-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT_S = 5.0
# Generated requests per (operation, mode): 2 scoring operations x 2 modes x 500 = 2,000.
PER_OPERATION_AND_MODE = 500
# The document the docs site renders as its HTTP reference (docs/gen_reference.py).
DOCS_OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "reference" / "openapi.json"


@pytest.fixture(scope="module")
def served(serve_tiny):
    # One torch thread: the tiny model needs no more, and requests come one at a time.
    return serve_tiny({"TWEETGUARD_API_TOKEN": TOKEN, "TWEETGUARD_TORCH_THREADS": "1"})


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_url(served.url + "/docs.json")


def test_document_has_the_guards_answers(api_schema):
    raw = api_schema.raw_schema
    assert set(raw["paths"]) >= {"/classify", "/v1/moderations"}
    assert raw["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    for path in ("/classify", "/v1/moderations"):
        post = raw["paths"][path]["post"]
        assert {"200", "400", "401", "403", "413", "415", "503"} <= set(post["responses"]), path
        assert post["security"] == [{"bearer": []}]
    items = raw["paths"]["/v1/moderations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"type": "array"}.items() <= items["properties"]["input"]["anyOf"][1].items()  # not just a string


def test_docs_http_reference_is_the_served_document(api_schema):
    """The HTTP reference page is generated from docs/reference/openapi.json: it must be what the service serves.
    After an intended API change, rewrite it with TWEETGUARD_WRITE_OPENAPI=1 and review the diff."""
    served = api_schema.raw_schema
    if os.environ.get("TWEETGUARD_WRITE_OPENAPI") == "1":
        DOCS_OPENAPI.write_text(json.dumps(served, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    documented = json.loads(DOCS_OPENAPI.read_text(encoding="utf-8"))
    assert documented == served, (f"{DOCS_OPENAPI} differs from GET /docs.json of the running service; if the API "
                                  "change is intended, rerun this test with TWEETGUARD_WRITE_OPENAPI=1")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path", ["/classify", "/v1/moderations"])
def test_generated_requests_get_documented_answers(served, path, mode):
    with httpx.Client() as client:  # the server is still up and answering (no worker died on the way)
        sent = generated_requests(served.url, path, mode.value, PER_OPERATION_AND_MODE, token=TOKEN,
                                  timeout_s=TIMEOUT_S)
        assert client.get(served.url + "/readyz").status_code == 200
    assert len(sent) >= PER_OPERATION_AND_MODE
    codes = set(sent)
    assert 400 in codes  # both modes reach the guard's refusals ...
    if mode is GenerationMode.POSITIVE:
        assert 200 in codes, codes  # ... and conforming bodies get scored


@pytest.mark.parametrize("path, body, field", [
    ("/classify", rb'{"texts": ["fine", "half \ud800 pair"]}', "texts[1]"),
    ("/classify", rb'{"text": "\udc00\ud83d reversed pair"}', "text"),
    ("/classify", rb'{"text": "' + rb"\ud800" * 1000 + rb'"}', "text"),
    ("/v1/moderations", rb'{"input": "lone \udfff"}', "input"),
    ("/v1/moderations", rb'{"input": ["ok", {"type": "text", "text": "\ud800"}]}', "input[1]"),
])
def test_lone_surrogate_escapes_are_a_400_naming_the_field(served, path, body, field):
    r = httpx.post(served.url + path, content=body, headers={**AUTH, "content-type": "application/json"},
                   timeout=TIMEOUT_S)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_unicode" and field in r.json()["error"]["message"]


@pytest.mark.parametrize("path, body", [
    ("/classify", rb'{"text": "a proper pair \ud83d\udd2a"}'),  # escaped emoji: a valid pair, scored
    ("/v1/moderations", rb'{"input": ["\ud83d\ude00", "\u202eoverride \u0000 nul"]}'),
])
def test_escaped_pairs_and_controls_are_scored(served, path, body):
    r = httpx.post(served.url + path, content=body, headers={**AUTH, "content-type": "application/json"},
                   timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
