"""Build-time pages (mkdocs-gen-files): the references are generated from what the code serves, never written twice.

- ``reference/cli.md``  from `training.cli.build_parser()`: the parser `tweetguard` itself runs.
- ``reference/http.md`` from ``docs/reference/openapi.json``: the OpenAPI document a running service serves at
  ``GET /docs.json`` (with a token configured). `tests/test_generated_requests.py` checks that file against a
  real `bentoml serve`; ``TWEETGUARD_WRITE_OPENAPI=1`` makes that test rewrite it after an API change.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import mkdocs_gen_files

from training.cli import build_parser

OPENAPI = Path(__file__).parent / "reference" / "openapi.json"
WIDTH = "110"  # argparse wraps help to $COLUMNS: fixed, so the page does not depend on the terminal


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """name -> (one-line help, sub-parser), in the parser's order."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # argparse has no public API
    helps = {c.dest: c.help or "" for c in action._choices_actions}
    return {name: (helps.get(name, ""), p) for name, p in action.choices.items()}


def cli_page() -> str:
    os.environ["COLUMNS"] = WIDTH
    parser = build_parser()
    commands = subcommands(parser)
    lines = ["# CLI reference", "",
             "Generated at build time from `training.cli.build_parser()`, the parser the `tweetguard` console "
             "script runs. Subcommand names and flags are part of the product and kept stable.", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`tweetguard {name}`](#tweetguard-{name}) | {_cell(help_)} |" for name, (help_, _) in commands.items()]
    lines += ["", "Every command that takes `--config` also takes `key.sub=value` overrides after it (a typo in a "
              "key fails with the list of valid keys); the order is defaults, then the YAML file, then overrides.", ""]
    for name, (_, sub) in commands.items():
        lines += [f"## tweetguard {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return f"{kind}: " + ", ".join(f"`{v}`" for v in schema["enum"])
    return kind + (" (nullable)" if schema.get("nullable") else "")


def _limits(schema: dict[str, Any]) -> str:
    keys = ("default", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems")
    return ", ".join(f"{k} {json.dumps(schema[k])}" for k in keys if k in schema)


def _cell(text: str) -> str:
    """One Markdown table cell: one line, no column break, no raw HTML (help texts say `<policy>`)."""
    return " ".join(str(text).split()).replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")


def schema_table(schema: dict[str, Any]) -> list[str]:
    props = schema.get("properties", {})
    if not props:
        return [f"Type: {_type(schema)}", ""]
    required = set(schema.get("required", []))
    rows = ["| field | type | required | limits / default | description |", "|---|---|---|---|---|"]
    for field, sub in props.items():
        rows.append(f"| `{field}` | {_cell(_type(sub))} | {'yes' if field in required else ''} | "
                    f"{_cell(_limits(sub))} | {_cell(sub.get('description', ''))} |")
    return rows + [""]


def http_page(spec: dict[str, Any]) -> str:
    info = spec.get("info", {})
    lines = ["# HTTP reference", "",
             f"Generated at build time from `docs/reference/openapi.json`, the OpenAPI {spec.get('openapi', '')} "
             "document the service serves at `GET /docs.json` (here with `TWEETGUARD_API_TOKEN` set); a test "
             "checks it against a running `bentoml serve`. The raw document: "
             "[openapi.json](openapi.json). How to call it, with examples: [Serving and the API](../serving.md).", "",
             f"Service: `{info.get('title', '')}`", ""]
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict):
                continue
            lines += [f"## `{method.upper()} {path}`", ""]
            text = op.get("description") or op.get("summary") or ""
            if text:
                lines += [_cell(text), ""]
            if op.get("security"):
                lines += ["Requires `Authorization: Bearer <token>` when the service has a token configured.", ""]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                lines += ["**Request body**", ""] + schema_table(body)
            lines += ["**Responses**", "", "| status | meaning | body |", "|---|---|---|"]
            for status, resp in op.get("responses", {}).items():
                schema = next(iter(resp.get("content", {}).values()), {}).get("schema")
                lines.append(f"| {status} | {_cell(resp.get('description', ''))} | "
                             f"{_cell(_type(schema)) if schema else ''} |")
            lines.append("")
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name, schema in schemas.items():
            lines += [f"### {name}", ""]
            if schema.get("description"):
                lines += [_cell(schema["description"]), ""]
            lines += schema_table(schema)
    return "\n".join(lines)


with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(cli_page())
with mkdocs_gen_files.open("reference/http.md", "w") as f:
    f.write(http_page(json.loads(OPENAPI.read_text(encoding="utf-8"))))
