"""The tweetguard BentoML service: `bentoml serve serving.service:TweetGuard` (or a bento built by
`tweetguard package`).

- ``POST /classify``        one text or a list -> calibrated probability, flag and action per policy
- ``POST /v1/moderations``  the OpenAI moderation shape (mapping in `serving.moderation`)
- ``/livez`` ``/readyz`` ``/metrics`` from BentoML; readiness is true once the model is loaded and warm;
  ``/metrics`` also carries what was scored (`serving.metrics`).

Both scoring APIs call one inner batchable API (`score_batch`, one list argument) through the service's own
in-process client, so BentoML's adaptive batching merges texts of concurrent requests into one model call
while everything stays in one process with one model copy. Scores come only from `serving.predictor`.
Auth, limits and input errors are handled before any of this by `serving.guard.RequestGuard`.
"""

from __future__ import annotations

import logging
import os

import bentoml
from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from serving.artifact import decide, verify_files
from serving.cache import ScoreCache
from serving.guard import IN_PROCESS, Refusal, RequestGuard
from serving.metrics import record_cache, record_model, record_results
from serving.moderation import moderation_response
from serving.policies import POLICIES
from serving.preprocess import normalize_tweet
from serving.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ModelInfo,
    ModerationRequest,
    ScoredText,
    ServiceSettings,
    TextResult,
    split_overrides,
)
from serving.scorelog import ScoreLog, model_fields

logger = logging.getLogger("tweetguard.service")
# BentoML's log setup passes WARNING and up from other libraries; our INFO lines (model served, refusals with
# their status and field, texts when TWEETGUARD_LOG_TEXTS is on) belong in the server log too.
logging.getLogger("tweetguard").setLevel(logging.INFO)

SETTINGS = ServiceSettings.from_env()
TOKEN_ENV = "TWEETGUARD_API_TOKEN"
# `tweetguard package` pins the exact model version as a bento argument (stored in the bento), so a built
# bento serves that model even when the store holds newer ones; otherwise the env/default tag.
MODEL_TAG = getattr(bentoml.use_arguments(), "model_tag", None) or SETTINGS.model_tag
INNER_ROUTE = "/internal/score_batch"


@bentoml.service(
    name="tweetguard",
    workers=1,  # one model copy; torch uses the cores inside a batch
    traffic={"timeout": SETTINGS.timeout_s},
    # BentoML's in-process client recycles its HTTP session every 100 requests by default and drops the
    # requests still in flight on it (seen as "Server disconnected" 500s at 16 concurrent clients).
    runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9},
)
class TweetGuard:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from serving.predictor import Predictor  # torch + transformers: only in the serving worker

        if not os.environ.get(TOKEN_ENV):
            logger.warning("%s is not set: the scoring endpoints are open to anyone who can reach this port",
                           TOKEN_ENV)
        self.ready = False
        # The store's copy must be the bytes `tweetguard package` imported (their sha256 is in the model's
        # metadata): a truncated or tampered file stops start-up here, naming it; the service never gets ready.
        verify_files(self.model.path, (self.model.info.metadata.get("lineage") or {}).get("files_sha256") or {})
        self.predictor = Predictor.load(self.model.path, batch_size=SETTINGS.predict_batch_size,
                                        num_threads=SETTINGS.torch_threads, path=SETTINGS.predict_path,
                                        cache_dir=SETTINGS.cache_dir)
        self.card = self.predictor.card
        self.version = str(self.model.tag.version)
        self.score_cache = ScoreCache(SETTINGS.cache_size) if SETTINGS.cache_size else None
        self.score_log = ScoreLog(SETTINGS.score_log, model_fields(self.card, self.version, self.model.path),
                                  log_texts=SETTINGS.log_texts) if SETTINGS.score_log else None
        self.predictor.predict(["warm up the model before readiness"])
        record_model(self.card.model_name, self.version, self.card.schema_version, self.predictor.path)
        self.ready = True
        logger.info("serving %s:%s (policies %s, thresholds %s, tiers %s, path %s)", self.card.model_name,
                    self.version, list(POLICIES), self.card.thresholds, self.card.tier_thresholds,
                    self.predictor.path)

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.api(
        route=INNER_ROUTE,
        batchable=True,
        max_batch_size=SETTINGS.batch_max_size,
        max_latency_ms=SETTINGS.batch_max_latency_ms,
    )
    def score_batch(self, texts: list[str]) -> list[ScoredText]:
        """Internal (in-process only): texts merged from concurrent requests, scored in one Predictor call."""
        rows = self.predictor.predict(texts)
        return [ScoredText(scores=[r["scores"][p] for p in POLICIES], truncated=r["truncated"]) for r in rows]

    async def _score(self, texts: list[str], thresholds: dict[str, float], tiers: dict[str, dict[str, float | None]],
                     endpoint: str) -> list[TextResult] | JSONResponse:
        if SETTINGS.log_texts:
            logger.info("texts: %r", texts)
        cache = self.score_cache
        keys = [(self.version, normalize_tweet(t)) for t in texts] if cache is not None else []
        rows: list[ScoredText | None] = [cache.get(k) for k in keys] if cache is not None else [None] * len(texts)
        missing = [i for i, row in enumerate(rows) if row is None]
        if cache is not None:
            record_cache(len(texts) - len(missing), len(missing))
        if missing:
            token = IN_PROCESS.set(True)
            try:
                fetched = await self.to_async.score_batch([texts[i] for i in missing])
            except BentoMLException as e:
                if getattr(e, "error_code", None) == 503:  # the batch queue dropped it: waited past max latency
                    return Refusal(503, "overloaded: the batch queue is full; retry later", code="overloaded",
                                   headers={"Retry-After": "1"}).response()
                raise
            finally:
                IN_PROCESS.reset(token)
            for i, row in zip(missing, fetched):
                rows[i] = row if isinstance(row, ScoredText) else ScoredText.model_validate(row)
                if cache is not None:
                    cache.put(keys[i], rows[i])
        results = []
        for row in rows:
            scores = dict(zip(POLICIES, row.scores))
            flags, actions = decide(scores, thresholds, tiers)  # the card's rule, as the Predictor applies it
            results.append(TextResult(scores=scores, flags=flags, actions=actions, truncated=row.truncated))
        record_results(results, endpoint)
        if self.score_log is not None:
            self.score_log.write(texts, results, endpoint)
        return results

    def _model_info(self, thresholds: dict[str, float], tiers: dict, source: str) -> ModelInfo:
        return ModelInfo(name=self.card.model_name, version=self.version, thresholds=thresholds, tiers=tiers,
                         thresholds_source=source, max_length=self.card.max_length)

    @bentoml.api(route="/classify", input_spec=ClassifyRequest)
    async def classify(self, texts=None, text=None, thresholds=None) -> ClassifyResponse:
        """Per text: calibrated probability, flag and action of every policy; model name, version, thresholds
        and tiers once."""
        req = ClassifyRequest(texts=texts, text=text, thresholds=thresholds)
        flag_overrides, tier_overrides = split_overrides(req.thresholds)
        used, tiers = self.predictor.thresholds(flag_overrides), self.predictor.tiers(tier_overrides)
        results = await self._score(req.items(), used, tiers, "classify")
        if isinstance(results, JSONResponse):
            return results  # type: ignore[return-value]
        source = "request" if req.thresholds else "policy_card"
        return ClassifyResponse(model=self._model_info(used, tiers, source), results=results)

    @bentoml.api(route="/v1/moderations", input_spec=ModerationRequest)
    async def moderations(self, input, model=None) -> dict:  # noqa: A002 - OpenAI's field name
        """OpenAI-compatible moderation: `harassment`, `harassment/threatening`, `violence` mapped from ours."""
        req = ModerationRequest(input=input, model=model)
        results = await self._score(req.items(), self.card.thresholds, self.card.tier_thresholds, "moderations")
        if isinstance(results, JSONResponse):
            return results  # type: ignore[return-value]
        return moderation_response(results, model=str(self.model.tag))  # the exact model store tag


TweetGuard.add_asgi_middleware(
    RequestGuard,
    settings=SETTINGS,
    routes={"/classify": ClassifyRequest, "/v1/moderations": ModerationRequest},
    internal=[INNER_ROUTE],
    token=os.environ.get(TOKEN_ENV) or None,
)
