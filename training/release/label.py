"""`tweetguard label`: the Label Studio round trip.

    tweetguard label export --input SAMPLE [--text-column text] --output TASKS.json [--model REF]
        [--no-predictions] [--url URL [--token TOKEN] [--title TITLE]]
    tweetguard label import (--input EXPORT.json | --url URL [--token TOKEN] --project ID) [--snapshots DIR]

`export` writes Label Studio tasks (a JSON list, importable in the UI) and, beside them, the labelling config
(`<output stem>.label_config.xml`): the text and one single-choice question per policy, true / false / unsure,
each headed by the policy's definition (serving.policies, the same text as docs/policies.md). With a model the
tasks carry its flags as pre-annotations (`predictions`, the probability on each answer);
`--no-predictions` writes them blind (the test carve, which must be labelled without the model's view) and
needs no model. With `--url` it also creates the project through the SDK (`label-studio-sdk`), with the rules of
docs/policies.md as the annotators' instructions, and imports the tasks into it. An input written by
`tweetguard sample` keeps its SAMPLE_FIELDS (strategy, stratum, sampling weight) in each task's data, and `import`
copies them onto each verdict: a stratified sample labelled here still estimates precision without bias.

`import` reads finished annotations (an export file in Label Studio's JSON format, or the project through the
SDK), one verdict per annotation (cancelled ones are skipped and counted), and freezes them into an immutable
feedback snapshot (training.data.feedback). A malformed annotation fails naming its task and field; nothing is
written then.
"""

from __future__ import annotations

import html
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from serving.policies import DESCRIPTIONS, POLICIES
from serving.decisions import text_sha256
from training.data.feedback import Snapshot, utc_iso, write_snapshot
from training.release.predict import read_input, table_texts
from training.release.sample import SAMPLE_FIELDS

CHOICES = ("true", "false", "unsure")
ANSWER = {"true": True, "false": False, "unsure": "unsure"}
POLICIES_DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"


def label_config() -> str:
    """The labelling config: the text, then per policy its definition and true / false / unsure."""
    parts = ['<View>',
             '  <Header value="Label each policy by the rules in the instructions (docs/policies.md). '
             'Unsure: the post alone cannot decide."/>',
             '  <Text name="text" value="$text"/>']
    for policy in POLICIES:
        parts.append(f"  <Header value={quoteattr(f'{policy}: {DESCRIPTIONS[policy]}')} size=\"5\"/>")
        parts.append(f'  <Choices name="{policy}" toName="text" choice="single" required="true" '
                     'showInline="true">')
        parts += [f'    <Choice value="{c}"/>' for c in CHOICES]
        parts.append("  </Choices>")
    parts.append("</View>")
    return "\n".join(parts) + "\n"


def instructions() -> str:
    """The annotators' instructions: docs/policies.md from "How to judge a post" up to "How these rules are
    used", as pre-formatted HTML (Label Studio shows a project's `expert_instruction` as HTML)."""
    text = POLICIES_DOC.read_text(encoding="utf-8")
    start, end = text.index("## How to judge a post"), text.index("## How these rules are used")
    body = re.sub(r"\]\(#[^)]*\)", "]", text[start:end]).strip()  # in-page links mean nothing there
    return f'<pre style="white-space: pre-wrap">{html.escape(body)}</pre>'


def sample_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The `tweetguard sample` columns of an input row that travel with its task and verdicts (SAMPLE_FIELDS:
    how the text was chosen, and the stratified / random sampling weight that makes a labelled sample estimate
    precision without bias); empty when the input is not a sample."""
    out: dict[str, Any] = {}
    for field in SAMPLE_FIELDS:
        value = row.get(field)
        if value in (None, ""):
            continue
        if field == "sample_weight":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"sample_weight {value!r} is not a number") from None
        out[field] = value
    return out


def tasks(texts: list[str], results: list[dict] | None, model_version: str | None,
          samples: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Label Studio tasks; `results` (Predictor.predict per text) become pre-annotations, None: blind;
    `samples` (sample_fields per text) go into each task's data."""
    out = []
    for i, text in enumerate(texts):
        task: dict[str, Any] = {"data": {"text": text, "text_sha256": text_sha256(text), "row": i + 1,
                                         "blind": results is None, **(samples[i] if samples else {})}}
        if results is not None:
            r = results[i]
            task["predictions"] = [{
                "model_version": model_version,
                "score": max(r["scores"].values()),
                "result": [{"from_name": p, "to_name": "text", "type": "choices",
                            "value": {"choices": ["true" if r["flags"][p] else "false"]},
                            "score": r["scores"][p]} for p in POLICIES],
            }]
        out.append(task)
    return out


def client(url: str, token: str | None):
    """A Label Studio SDK client; the token from --token or $LABEL_STUDIO_API_KEY."""
    from label_studio_sdk import LabelStudio

    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ValueError(f"--url {url}: needs an access token (--token or ${TOKEN_ENV})")
    return LabelStudio(base_url=url, api_key=token)


@contextmanager
def _server(url: str, doing: str):
    """Turn the SDK's HTTP and connection errors into one clear ValueError (the CLI prints it, exit 2)."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as e:
        raise ValueError(f"Label Studio at {url} refused to {doing}: HTTP {e.status_code} {e.body}") from None
    except httpx.HTTPError as e:
        raise ValueError(f"Label Studio at {url}: cannot {doing}: {e}") from None


@dataclass
class Exported:
    tasks: Path
    config: Path
    n: int
    project: int | None = None


def export(input_path: str | Path, output: str | Path, *, predictor=None, model_version: str | None = None,
           text_column: str = "text", url: str | None = None, token: str | None = None,
           title: str = "tweetguard") -> Exported:
    """Write tasks and config (and create the project with --url); see the module."""
    table = read_input(Path(input_path))
    texts = table_texts(table, text_column, Path(input_path))
    if not texts:
        raise ValueError(f"{input_path}: no texts to label")
    samples = []
    for line, row in zip(table.lines, table.rows):
        try:
            samples.append(sample_fields(row))
        except ValueError as e:
            raise ValueError(f"{input_path}: line {line}: {e}") from None
    results = None if predictor is None else predictor.predict(texts)
    task_list = tasks(texts, results, model_version, samples)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(task_list, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    config_path = output.with_name(output.stem + ".label_config.xml")
    config_path.write_text(label_config(), encoding="utf-8")
    done = Exported(output, config_path, len(task_list))
    if url:
        ls = client(url, token)
        with _server(url, "create the project"):
            project = ls.projects.create(title=title, label_config=label_config(), expert_instruction=instructions(),
                                         show_instruction=True, model_version=model_version or "")
            ls.projects.import_tasks(id=project.id, request=task_list)
        done.project = project.id
    return done


def _reviewer(annotation: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"label-studio:{who}"


def _when(annotation: dict, where: str) -> str:
    when = annotation.get("updated_at") or annotation.get("created_at")
    try:
        return utc_iso(when)
    except ValueError:
        raise ValueError(f"{where}: annotation {annotation.get('id')}: updated_at / created_at {when!r} is not an "
                         "ISO 8601 time with a zone") from None


def verdicts(export_tasks: list[dict], source: str) -> tuple[list[dict[str, Any]], int]:
    """(one verdict row per finished annotation, annotations skipped as cancelled) of a Label Studio JSON
    export; ValueError naming the task and field of anything malformed."""
    if not isinstance(export_tasks, list):
        raise ValueError(f"{source}: not a Label Studio JSON export (a list of tasks)")
    rows, cancelled = [], 0
    for t in export_tasks:
        where = f"{source}: task {t.get('id', '?')}"
        text = (t.get("data") or {}).get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: data.text is missing or empty")
        for a in t.get("annotations") or []:
            if a.get("was_cancelled"):
                cancelled += 1
                continue
            labels: dict[str, Any] = {}
            for item in a.get("result") or []:
                name = item.get("from_name")
                if name not in POLICIES:
                    raise ValueError(f"{where}: annotation {a.get('id')}: result {name!r} is not a policy "
                                     f"({', '.join(POLICIES)})")
                chosen = (item.get("value") or {}).get("choices") or []
                if len(chosen) != 1 or chosen[0] not in ANSWER:
                    raise ValueError(f"{where}: annotation {a.get('id')}: {name}: {chosen!r} is not one of "
                                     f"{', '.join(CHOICES)}")
                labels[name] = ANSWER[chosen[0]]
            if not labels:
                raise ValueError(f"{where}: annotation {a.get('id')}: no policy answered")
            data = t.get("data") or {}
            try:
                sampled = sample_fields(data)
            except ValueError as e:
                raise ValueError(f"{where}: data.{e}") from None
            rows.append({"text": text, "text_sha256": text_sha256(text), "labels": labels,
                         "reviewer": _reviewer(a),
                         "labelled_at": _when(a, where),
                         "blind": bool(data.get("blind", False)),
                         "origin": "label-studio", "verdict": str(a.get("id")),
                         "item": f"project{t.get('project', '?')}/task{t.get('id')}", **sampled})
    return rows, cancelled


@dataclass
class Imported:
    snapshot: Snapshot
    cancelled: int


def import_labels(snapshots: str | Path, *, input_path: str | Path | None = None, url: str | None = None,
                  token: str | None = None, project: int | None = None) -> Imported:
    """Pull finished annotations into a feedback snapshot; see the module."""
    if input_path is not None:
        source = str(input_path)
        try:
            data = json.loads(Path(input_path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{input_path}: not JSON (line {e.lineno}: {e.msg})") from None
    else:
        if url is None or project is None:
            raise ValueError("label import needs --input EXPORT.json, or --url and --project")
        source = f"{url.rstrip('/')}/projects/{project}"
        with _server(url, f"export project {project}"):
            chunks = client(url, token).projects.exports.download_sync(id=project, export_type="JSON")
            data = json.loads(b"".join(chunks))
    rows, cancelled = verdicts(data, source)
    return Imported(write_snapshot(rows, snapshots, origin="label-studio", source=source), cancelled)
