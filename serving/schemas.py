"""Service settings and the HTTP request/response shapes of the tweetguard service.

Pure pydantic (no BentoML, no torch): the request guard, the service and the tests all import it.
Policy names come from `serving.policies`; thresholds come from the model's policy card.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from serving.fastpath import AUTO, PATHS
from serving.policies import POLICIES
from serving.reasons import METHODS, SERVED_METHODS

ENV_PREFIX = "TWEETGUARD_"


class ServiceSettings(BaseModel):
    """Runtime knobs of the service, each overridable by the env var ``TWEETGUARD_<FIELD NAME>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_tag: str = Field("tweetguard:latest", description="BentoML model store tag to serve")
    max_body_bytes: int = Field(1_048_576, gt=0, description="request body limit (bytes), checked before parsing")
    max_texts: int = Field(256, gt=0, description="texts per request")
    max_chars: int = Field(4_000, gt=0, description="characters per text (a tweet is <= 280; long posts more)")
    batch_max_size: int = Field(
        64, gt=0, description="micro-batching: most texts merged from concurrent requests into one model call (a "
        "larger single request is scored alone)"
    )
    batch_max_latency_ms: int = Field(
        5_000, gt=0, description="micro-batching: a request expected to wait longer than this for its model call "
        "is refused at once with 503 + Retry-After (and one that did wait longer, when its turn comes)"
    )
    max_inflight: int = Field(64, gt=0, description="scoring requests in flight per worker; more get 503")
    timeout_s: float = Field(30.0, gt=0, description="BentoML traffic timeout per request (504 after)")
    predict_batch_size: int = Field(32, gt=0, description="Predictor batch size inside one model call")
    torch_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads (default: all cores); 1 is far faster on a busy host"
    )
    predict_path: str = Field(
        AUTO, description=f"inference path, one of {PATHS} or {AUTO!r}: the fastest path that agrees with the "
        "reference here (serving.fastpath)"
    )
    cache_dir: str | None = Field(
        None, description="where the onnxruntime path caches its exported graph (default ~/.cache/tweetguard)"
    )
    access_log: bool = Field(True, description="BentoML's access log: one line per request (client, method, path, "
                             "status, sizes, latency, trace ids; never texts)")
    log_texts: bool = Field(False, description="log request texts (off: logs carry counts and sizes only); also "
                            "puts each text in the score log")
    score_log: str | None = Field(
        None, description="append one JSON line per scored text (scores, flags, length, model; no text unless "
        "log_texts) to this file, for `tweetguard monitor` (serving.scorelog); unset = off"
    )
    cache_size: int = Field(
        10_000, ge=0, description="exact-repeat cache: texts whose scores are kept (LRU keyed by model version and "
        "normalized text, serving.cache); 0 = off"
    )
    decision_key: str | None = Field(
        None, description="secret that signs each result's decision_id (serving.decisions, HMAC-SHA256); unset = a "
        "random key per process, so ids stop verifying at a restart (logged at start-up)"
    )
    data_dir: str = Field("~/.local/share/tweetguard", description="where the service keeps its own data (the "
                          "feedback database unless feedback_db is set)")
    feedback_db: str | None = Field(
        None, description="SQLAlchemy URL of the feedback store (POST /feedback), e.g. postgresql://...; unset = "
        "SQLite (WAL) at <data_dir>/feedback.db"
    )
    feedback_retention_days: float | None = Field(
        None, gt=0, description="delete verdicts older than this many days (at start-up and on every write); "
        "unset = keep; `tweetguard feedback purge --before DATE` by hand"
    )
    max_note_chars: int = Field(2000, gt=0, description="longest note of a verdict (POST /feedback)")
    explain_top_k: int = Field(5, gt=0, description="reasons: the most words listed per policy and text")
    explain_max_wait_ms: int = Field(
        250, gt=0, description="reasons: an explained request is admitted only while the work queued ahead of it "
        "(both batcher lanes) is under this; else 503 at once, so explanations are shed before decisions slow"
    )
    explain_cpu_share: float = Field(
        0.25, gt=0, le=1, description="reasons: the share of the time explained requests' copies may take while "
        "plain requests come (serving.batcher's later lane pauses after a call a plain request waited for; 1 = no "
        "pause), so explanations do not keep every core busy and slow the decisions"
    )
    explain_call_texts: int = Field(
        1, gt=0, description="reasons: the most explained copies in one model call (serving.batcher's later lane); "
        "a plain request that arrives meanwhile waits for at most that call, so fewer keep decisions faster and "
        "explanations slower"
    )
    explain_max_words: int = Field(
        256, gt=0, description="reasons: the most words explained in one request (all its texts); each is one more "
        "text scored (serving.reasons), so more is refused with 400"
    )

    @field_validator("predict_path")
    @classmethod
    def _known_path(cls, value: str) -> str:
        if value != AUTO and value not in PATHS:
            raise ValueError(f"{value!r} is not an inference path; expected one of {PATHS} or {AUTO!r}")
        return value

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServiceSettings:
        """Defaults overridden by ``TWEETGUARD_*`` env vars (empty = unset); a bad value names its variable."""
        environ = os.environ if environ is None else environ
        names = {f: ENV_PREFIX + f.upper() for f in cls.model_fields}
        values = {f: environ[var] for f, var in names.items() if environ.get(var, "") != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            bad = ", ".join(f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}" for err in e.errors())
            raise ValueError(f"invalid service settings: {bad}") from None


Thresholds = dict[str, float]
Action = Literal["none", "review", "remove"]  # serving.artifact.ACTIONS
# A threshold in a request is a JSON number, as documented: pydantic would otherwise take true as 1.0 and
# "0.3" as 0.3.
Threshold = Annotated[float, Strict()]


class PolicyThresholds(BaseModel):
    """One policy's overrides: the flag threshold and / or its decision tiers (null turns a tier off)."""

    model_config = ConfigDict(extra="forbid")

    flag: Threshold | None = Field(None, description="flag threshold (the same as giving a bare number)")
    review: Threshold | None = Field(None, description="review tier threshold; null: no review tier this request")
    remove: Threshold | None = Field(None, description="remove tier threshold; null: no remove tier this request")

    @model_validator(mode="after")
    def _ordered(self) -> PolicyThresholds:
        for name in ("flag", "review", "remove"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:  # also false for NaN
                raise ValueError(f"{name} threshold must be within [0, 1], got {value}")
        if self.review is not None and self.remove is not None and self.review > self.remove:
            raise ValueError(f"review threshold {self.review} is above remove threshold {self.remove}")
        return self


def _check_thresholds(value: dict[str, float | PolicyThresholds] | None):
    if value is None:
        return None
    unknown = sorted(set(value) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}; policies are {list(POLICIES)}")
    for name, t in value.items():
        if not isinstance(t, PolicyThresholds) and not 0.0 <= t <= 1.0:  # also false for NaN
            raise ValueError(f"threshold for {name!r} must be within [0, 1], got {t}")
    return value


def split_overrides(value: dict[str, float | PolicyThresholds] | None
                    ) -> tuple[Thresholds, dict[str, dict[str, float | None]]]:
    """A request's `thresholds` -> (flag overrides, tier overrides) for `Predictor.thresholds` / `.tiers`.
    A tier given as null is turned off; a tier left out keeps the policy card's."""
    flags: Thresholds = {}
    tiers: dict[str, dict[str, float | None]] = {}
    for name, t in (value or {}).items():
        if not isinstance(t, PolicyThresholds):
            flags[name] = t
            continue
        if t.flag is not None:
            flags[name] = t.flag
        given = {k: getattr(t, k) for k in ("review", "remove") if k in t.model_fields_set}
        if given:
            tiers[name] = given
    return flags, tiers


class ClassifyRequest(BaseModel):
    """``{"texts": [...]}`` or ``{"text": "..."}``; optional per-request thresholds (echoed back)."""

    # Examples live on fields: BentoML's OpenAPI generator rejects model-level `examples`.
    model_config = ConfigDict(extra="forbid")

    texts: list[str] | None = Field(
        None, description="tweets to score, in order", examples=[["have a nice day", "i will find you"]]
    )
    text: str | None = Field(None, description="one tweet to score (instead of texts)")
    thresholds: dict[str, Threshold | PolicyThresholds] | None = Field(
        None,
        description="per-policy overrides of the policy card for this request: a number (the flag threshold) "
        "or an object with any of flag / review / remove (null turns that tier off)",
        examples=[{"violence": 0.3, "abusive": {"review": 0.5, "remove": 0.95}}],
    )

    explain: Annotated[bool, Strict()] = Field(
        False, description="add `reasons` to each result: per policy, the words that drove its score (occlusion: "
        "each word deleted, scored in the same batch as the text; serving.reasons)"
    )
    explain_method: str = Field("occlusion", description="how reasons are computed; the service runs occlusion "
                                "(integrated_gradients is offline: `tweetguard explain`)")

    _thresholds = field_validator("thresholds")(_check_thresholds)

    @field_validator("explain_method")
    @classmethod
    def _served_method(cls, value: str) -> str:
        if value not in SERVED_METHODS:
            offline = " (offline only: `tweetguard explain --method`)" if value in METHODS else ""
            raise ValueError(f"explain_method {value!r} is not served{offline}; served methods are "
                             f"{list(SERVED_METHODS)}")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.texts is None) == (self.text is None):
            raise ValueError("give exactly one of 'texts' (a list of strings) or 'text' (a string)")
        return self

    def items(self) -> list[str]:
        return self.texts if self.texts is not None else [self.text]  # type: ignore[list-item]

    def field_name(self, i: int) -> str:
        return f"texts[{i}]" if self.texts is not None else "text"


def _moderation_input(value: object) -> object:
    """OpenAI's ``input``: a string, a list of strings, or a list of parts (only text parts are scored)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError(f"input must be a string or a list of strings, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and item.get("type") == "text" and set(item) <= {"type", "text"}:
            item = item.get("text")
            if not isinstance(item, str):
                raise ValueError(f"input[{i}].text must be a string")
        elif isinstance(item, dict) and "type" in item:
            raise ValueError(f"input[{i}]: only text parts are supported by this model, got type {item['type']!r}")
        elif not isinstance(item, str):
            raise ValueError(f"input[{i}] must be a string or a text part, got {type(item).__name__}")
        out.append(item)
    return out


# What `_moderation_input` accepts, for the OpenAPI document (the parts are turned into strings before the type
# check, so the type alone would document strings only).
_TEXT_PART = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
              "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}
_INPUT_SCHEMA = {"anyOf": [{"type": "string"},
                           {"type": "array", "items": {"anyOf": [{"type": "string"}, _TEXT_PART]}}]}


class ModerationOptions(BaseModel):
    """The `tweetguard` extension of a moderation request."""

    model_config = ConfigDict(extra="forbid")

    explain: Annotated[bool, Strict()] = Field(
        False, description="add reasons and statements of reasons to each result's `tweetguard` extra (as "
        "/classify's explain: occlusion)"
    )


class ModerationRequest(BaseModel):
    """The OpenAI ``POST /v1/moderations`` request: ``input`` is a string, strings, or text parts."""

    model_config = ConfigDict(extra="forbid")

    input: Annotated[str | list[str], WithJsonSchema(_INPUT_SCHEMA)] = Field(
        ..., description="text(s) to classify (text parts are also accepted)", examples=[["i will find you"]]
    )
    model: str | None = Field(None, description="accepted for compatibility; the served model answers")
    tweetguard: ModerationOptions | None = Field(
        None, description="tweetguard's extension (OpenAI clients: extra_body={\"tweetguard\": {...}}); absent = "
        "the plain OpenAI behaviour", examples=[{"explain": True}]
    )

    _input = field_validator("input", mode="before")(_moderation_input)

    @property
    def explain(self) -> bool:
        return self.tweetguard is not None and self.tweetguard.explain

    def items(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input

    def field_name(self, i: int) -> str:
        return "input" if isinstance(self.input, str) else f"input[{i}]"


class WordSpan(BaseModel):
    word: str = Field(description="a maximal run of non-space characters of the text as sent")
    start: int = Field(description="character offset of the word in the text as sent (text[start:end] == word)")
    end: int


class WordReason(WordSpan):
    contribution: float = Field(description="the policy's calibrated score minus its score without this word")


class TextResult(BaseModel):
    scores: dict[str, float] = Field(description="calibrated probability per policy")
    flags: dict[str, bool] = Field(description="probability >= threshold, per policy")
    actions: dict[str, Action] = Field(
        description="per policy, the most severe decision tier the probability reaches: none, review or remove"
    )
    truncated: bool = Field(description="the text was longer than the model window; its tail was not scored")
    decision_id: str = Field("", description="signed record of this decision (model version, the text's sha256, "
                             "scores, thresholds and tiers used, time): serving.decisions; quote it to give feedback")
    reasons: dict[str, list[WordReason]] = Field(
        default_factory=dict, description="with explain: per policy, the words with the highest contribution to "
        "its calibrated score (the score minus the score without the word), highest first; {} otherwise"
    )
    statements: list[dict] = Field(
        default_factory=list, description="with explain: a statement of reasons (serving.reasons."
        "statement_of_reasons, schema_version 1) for each policy the text is flagged for or has an action on; [] "
        "otherwise"
    )
    words_outside_window: list[WordSpan] = Field(
        default_factory=list, description="with explain: words past the model window (not scored, so not "
        "attributed); [] otherwise"
    )


class ModelInfo(BaseModel):
    name: str
    version: str = Field(description="BentoML model store version of the served artifact")
    thresholds: Thresholds = Field(description="the thresholds the flags in this response used")
    tiers: dict[str, dict[str, float | None]] = Field(
        description="per policy, the review / remove thresholds the actions used (null: tier off)"
    )
    thresholds_source: Literal["policy_card", "request"]
    max_length: int = Field(description="model window in tokens; longer texts are truncated")


class ClassifyResponse(BaseModel):
    model: ModelInfo
    results: list[TextResult]


class ScoredText(BaseModel):
    """What the inner batchable API returns per text (flags are decided per request, outside the batch)."""

    scores: list[float]  # in POLICIES order
    truncated: bool


Label = Annotated[bool, Strict()] | Literal["unsure"]


class FeedbackRequest(BaseModel):
    """A moderator's verdict on one served decision: a label per policy (true / false / "unsure"), so a policy
    the model missed can be reported too."""

    model_config = ConfigDict(extra="forbid")

    decision_id: str = Field(..., max_length=8192, description="the decision_id of the /classify (or "
                             "/v1/moderations) result the verdict is about")
    labels: dict[str, Label] = Field(..., description="per policy: true (violates), false (does not) or "
                                     "\"unsure\"; at least one policy", examples=[{"abusive": False, "violence": True}])
    reviewer: str = Field(..., min_length=1, max_length=200, description="who decided (an id of your tool's)")
    note: str | None = Field(None, description="free text (TWEETGUARD_MAX_NOTE_CHARS)")
    text: str | None = Field(None, description="the text as sent for the decision; stored only if its sha256 is "
                             "the decision's (without it the verdict is kept but not used for training)")

    @field_validator("labels")
    @classmethod
    def _known_policies(cls, value: dict) -> dict:
        if not value:
            raise ValueError("give a label for at least one policy")
        unknown = sorted(set(value) - set(POLICIES))
        if unknown:
            raise ValueError(f"unknown policies {unknown}; policies are {list(POLICIES)}")
        return value


class FeedbackResponse(BaseModel):
    id: int = Field(description="the stored verdict's id")
    revision: int = Field(description="1 for a reviewer's first verdict on a decision, then 2, 3, ... (appeals)")
    stored: bool = Field(description="false: an identical repeat of the reviewer's last verdict, nothing stored")
    usable_for_training: bool = Field(description="false: no matching text was given, the verdict is only counted")
