"""The tweetguard BentoML service: `bentoml serve serving.service:TweetGuard` (or a bento built by
`tweetguard package`).

- ``POST /classify``        one text or a list -> calibrated probability, flag and action per policy
- ``POST /v1/moderations``  the OpenAI moderation shape (mapping in `serving.moderation`)
- ``POST /feedback``        a moderator's verdict on a served decision (`serving.feedback`; only with a token)
- ``/livez`` ``/readyz`` ``/metrics`` from BentoML; readiness is true once the model is loaded and warm;
  ``/metrics`` also carries what was scored (`serving.metrics`).

Both scoring APIs hand their texts (the exact-repeat cache's misses) to one in-process micro-batcher
(`serving.batcher`), which merges the texts of concurrent requests into one Predictor call in a worker thread:
one process, one model copy, no internal HTTP hop. Scores come only from `serving.predictor`.
Auth, limits and input errors are handled before any of this by `serving.guard.RequestGuard`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time

import bentoml
from starlette.responses import JSONResponse

from serving.artifact import decide, verify_files
from serving.batcher import MicroBatcher, Overloaded
from serving.cache import ScoreCache
from serving.decisions import DecisionError, DecisionSigner, text_sha256
from serving.feedback import FeedbackStore, sqlite_url
from serving.guard import FEEDBACK_PATH, Refusal, RequestGuard
from serving.metrics import record_cache, record_model, record_model_call, record_results, record_verdict
from serving.moderation import moderation_response
from serving.policies import POLICIES
from serving.preprocess import normalize_tweet
from serving.reasons import occlusion_plan, occlusion_reasons, statement_of_reasons
from serving.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    FeedbackRequest,
    FeedbackResponse,
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
_batcher: MicroBatcher | None = None  # the worker's batcher once the model is loaded


def queue_refusal() -> str | None:
    """The guard asks this before reading a body: why the batch queue would refuse a request now (None: admit)."""
    return None if _batcher is None else _batcher.refusal()


@bentoml.service(
    name="tweetguard",
    workers=1,  # one model copy; torch uses the cores inside a batch
    traffic={"timeout": SETTINGS.timeout_s},
    logging={"access": {"enabled": SETTINGS.access_log}},
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
        self.decisions = DecisionSigner(SETTINGS.decision_key)
        if self.decisions.ephemeral:
            logger.warning("TWEETGUARD_DECISION_KEY is not set: decision ids are signed with a random key and stop "
                           "verifying when this process restarts")
        self.verdict_store = None  # POST /feedback: only behind a token (the guard answers 404 without one)
        if os.environ.get(TOKEN_ENV):
            self.verdict_store = FeedbackStore(SETTINGS.feedback_db or sqlite_url(SETTINGS.data_dir))
            self._apply_retention()
            logger.info("POST /feedback stores verdicts in %s", self.verdict_store.engine.url.render_as_string())
        else:
            logger.warning("POST /feedback is off: set %s to receive moderators' verdicts", TOKEN_ENV)
        self.score_cache = ScoreCache(SETTINGS.cache_size) if SETTINGS.cache_size else None
        self.score_log = ScoreLog(SETTINGS.score_log, model_fields(self.card, self.version, self.model.path),
                                  log_texts=SETTINGS.log_texts) if SETTINGS.score_log else None
        self.batcher = MicroBatcher(self._score_rows, max_size=SETTINGS.batch_max_size,
                                    max_latency_s=SETTINGS.batch_max_latency_ms / 1e3, on_call=record_model_call,
                                    later_share=SETTINGS.explain_cpu_share,
                                    later_max_size=SETTINGS.explain_call_texts)
        warmup = [f"warm up the model before readiness {i}" for i in range(8)]
        t0 = time.perf_counter()
        self.predictor.predict(warmup)
        self.batcher.observe(len(warmup), time.perf_counter() - t0)  # the first wait estimate
        # The ~270k objects of torch, transformers and BentoML live as long as the process: moved out of the
        # garbage collector's view, a full collection under load no longer scans them (~0.2 s each on a quiet
        # core, far longer on busy ones: the served p99 blips).
        gc.collect()
        gc.freeze()
        record_model(self.card.model_name, self.version, self.card.schema_version, self.predictor.path)
        global _batcher
        _batcher = self.batcher
        self.ready = True
        logger.info("serving %s:%s (policies %s, thresholds %s, tiers %s, path %s)", self.card.model_name,
                    self.version, list(POLICIES), self.card.thresholds, self.card.tier_thresholds,
                    self.predictor.path)

    def __is_ready__(self) -> bool:
        return self.ready

    def _score_rows(self, texts: list[str]) -> list[ScoredText]:
        """One model call over the texts the batcher merged (runs in its worker thread)."""
        rows = self.predictor.predict(texts)
        return [ScoredText(scores=[r["scores"][p] for p in POLICIES], truncated=r["truncated"]) for r in rows]

    async def _score(self, texts: list[str], thresholds: dict[str, float], tiers: dict[str, dict[str, float | None]],
                     endpoint: str, explain: bool = False) -> list[TextResult] | JSONResponse:
        if SETTINGS.log_texts:
            logger.info("texts: %r", texts)
        if explain:
            return await self._explained(texts, thresholds, tiers, endpoint)
        cache = self.score_cache
        keys = [(self.version, normalize_tweet(t)) for t in texts] if cache is not None else []
        rows: list[ScoredText | None] = [cache.get(k) for k in keys] if cache is not None else [None] * len(texts)
        missing = [i for i, row in enumerate(rows) if row is None]
        if cache is not None:
            record_cache(len(texts) - len(missing), len(missing))
        if missing:
            try:
                fetched = await self.batcher.score([texts[i] for i in missing])
            except Overloaded as e:
                return Refusal(503, str(e), code="overloaded", headers={"Retry-After": "1"}).response()
            for i, row in zip(missing, fetched):
                rows[i] = row
                if cache is not None:
                    cache.put(keys[i], rows[i])
        return self._results(texts, rows, thresholds, tiers, endpoint)

    async def _explained(self, texts: list[str], thresholds: dict[str, float],
                         tiers: dict[str, dict[str, float | None]], endpoint: str) -> list[TextResult] | JSONResponse:
        """Scores with reasons (serving.reasons, occlusion): each text and its copies without one word go to the
        batcher together, in its later lane (behind every plain request; they count in the wait estimate that
        admits explained requests, which get 503 when it is over the limit); the text's own row is the score
        returned, so the reasons explain exactly that score. The exact-repeat cache is not used."""
        wait = self.batcher.expected_wait_s(later=True)
        if wait * 1e3 > SETTINGS.explain_max_wait_ms:
            return Refusal(503, f"explain: ~{wait * 1e3:.0f} ms of work is queued, explanations are admitted under "
                           f"{SETTINGS.explain_max_wait_ms} ms (TWEETGUARD_EXPLAIN_MAX_WAIT_MS); retry, or ask "
                           "without explain", code="overloaded", headers={"Retry-After": "1"}).response()
        plans = [occlusion_plan(t, self.predictor.tokenizer, self.card.max_length) for t in texts]
        flat = [x for _, _, batch in plans for x in batch]
        step = SETTINGS.explain_call_texts  # later-lane requests of one model call's size at most
        chunks = await asyncio.gather(*(self.batcher.score(flat[i:i + step], later=True)
                                        for i in range(0, len(flat), step)), return_exceptions=True)
        for chunk in chunks:
            if isinstance(chunk, Overloaded):
                return Refusal(503, str(chunk), code="overloaded", headers={"Retry-After": "1"}).response()
            if isinstance(chunk, BaseException):
                raise chunk
        fetched = [row for chunk in chunks for row in chunk]
        rows, reasons, at = [], [], 0
        for text, (words, n_inside, batch) in zip(texts, plans):
            block, at = fetched[at:at + len(batch)], at + len(batch)
            found = occlusion_reasons(text, words, n_inside, [r.scores for r in block], SETTINGS.explain_top_k)
            if list(found.score.values()) != block[0].scores:  # the reasons explain the score returned
                raise AssertionError("occlusion: the unmasked copy's score is not the score returned")
            rows.append(block[0])
            reasons.append(found)
        return self._results(texts, rows, thresholds, tiers, endpoint, reasons)

    def _results(self, texts: list[str], rows: list, thresholds: dict[str, float],
                 tiers: dict[str, dict[str, float | None]], endpoint: str, reasons: list | None = None
                 ) -> list[TextResult]:
        results = []
        for i, row in enumerate(rows):
            scores = dict(zip(POLICIES, row.scores))
            flags, actions = decide(scores, thresholds, tiers)  # the card's rule, as the Predictor applies it
            decision_id = self.decisions.issue(model=f"{self.card.model_name}:{self.version}", text=texts[i],
                                               scores=scores, thresholds=thresholds, tiers=tiers)
            extra = {} if reasons is None else {
                "reasons": reasons[i].policies, "words_outside_window": reasons[i].outside_window,
                "statements": [statement_of_reasons(
                    p, score=scores[p], flagged=flags[p], action=actions[p], flag_threshold=thresholds[p],
                    tier_thresholds=tiers[p], words=reasons[i].policies[p], card=self.card, version=self.version,
                    decision_id=decision_id) for p in POLICIES if flags[p] or actions[p] != "none"]}
            results.append(TextResult(scores=scores, flags=flags, actions=actions, truncated=row.truncated,
                                      decision_id=decision_id, **extra))
        record_results(results, endpoint)
        if self.score_log is not None:
            self.score_log.write(texts, results, endpoint)
        return results

    def _model_info(self, thresholds: dict[str, float], tiers: dict, source: str) -> ModelInfo:
        return ModelInfo(name=self.card.model_name, version=self.version, thresholds=thresholds, tiers=tiers,
                         thresholds_source=source, max_length=self.card.max_length)

    @bentoml.api(route="/classify", input_spec=ClassifyRequest)
    async def classify(self, texts=None, text=None, thresholds=None, explain=False,
                       explain_method="occlusion") -> ClassifyResponse:
        """Per text: calibrated probability, flag and action of every policy (with `explain`, the words that drove
        each score); model name, version, thresholds and tiers once."""
        req = ClassifyRequest(texts=texts, text=text, thresholds=thresholds, explain=explain,
                              explain_method=explain_method)
        flag_overrides, tier_overrides = split_overrides(req.thresholds)
        used, tiers = self.predictor.thresholds(flag_overrides), self.predictor.tiers(tier_overrides)
        results = await self._score(req.items(), used, tiers, "classify", explain=req.explain)
        if isinstance(results, JSONResponse):
            return results  # type: ignore[return-value]
        source = "request" if req.thresholds else "policy_card"
        return ClassifyResponse(model=self._model_info(used, tiers, source), results=results)

    def _apply_retention(self) -> None:
        if self.verdict_store is not None and SETTINGS.feedback_retention_days:
            self.verdict_store.purge(time.time() - SETTINGS.feedback_retention_days * 86400)

    def _store_verdict(self, req: FeedbackRequest, decision: dict):
        stored = self.verdict_store.record(decision_id=req.decision_id, decision=decision, reviewer=req.reviewer,
                                           labels=req.labels, note=req.note, text=req.text)
        self._apply_retention()
        return stored

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest)
    async def feedback(self, decision_id, labels, reviewer, note=None, text=None) -> FeedbackResponse:
        """A moderator's verdict on a served decision (its decision_id), a label per policy; stored durably."""
        req = FeedbackRequest(decision_id=decision_id, labels=labels, reviewer=reviewer, note=note, text=text)
        try:
            decision = self.decisions.verify(req.decision_id)
        except DecisionError as e:
            return Refusal(400, str(e), param="decision_id", code="invalid_decision").response()  # type: ignore
        if req.text is not None and text_sha256(req.text) != decision["text_sha256"]:
            return Refusal(400, "text: not the text of this decision (its sha256 differs); send it exactly as it "  # type: ignore
                           "was scored, or leave it out", param="text", code="text_mismatch").response()
        stored = await asyncio.to_thread(self._store_verdict, req, decision)
        if stored.new:
            record_verdict(decision, req.labels)
        body = FeedbackResponse(id=stored.id, revision=stored.revision, stored=stored.new,
                                usable_for_training=stored.usable_for_training)
        return JSONResponse(body.model_dump(), status_code=201 if stored.new else 200)  # type: ignore

    @bentoml.api(route="/v1/moderations", input_spec=ModerationRequest)
    async def moderations(self, input, model=None, tweetguard=None) -> dict:  # noqa: A002 - OpenAI's field name
        """OpenAI-compatible moderation: `harassment`, `harassment/threatening`, `violence` mapped from ours
        (`tweetguard: {"explain": true}` adds reasons to each result's `tweetguard` extra)."""
        req = ModerationRequest(input=input, model=model, tweetguard=tweetguard)
        results = await self._score(req.items(), self.card.thresholds, self.card.tier_thresholds, "moderations",
                                    explain=req.explain)
        if isinstance(results, JSONResponse):
            return results  # type: ignore[return-value]
        return moderation_response(results, model=str(self.model.tag))  # the exact model store tag


TweetGuard.add_asgi_middleware(
    RequestGuard,
    settings=SETTINGS,
    routes={"/classify": ClassifyRequest, "/v1/moderations": ModerationRequest, FEEDBACK_PATH: FeedbackRequest},
    token=os.environ.get(TOKEN_ENV) or None,
    queue_refusal=queue_refusal,
)
