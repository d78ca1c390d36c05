"""What the service scores, as Prometheus metrics on `/metrics` beside BentoML's own (request counts, latency,
batch sizes). `bentoml.metrics` mirrors prometheus_client and handles BentoML's multiprocess mode.

- ``tweetguard_texts_scored_total{endpoint}``          texts scored
- ``tweetguard_truncated_texts_total{endpoint}``       texts longer than the model window (tail not scored)
- ``tweetguard_flags_total{policy}``                   flags raised (at the thresholds each request used)
- ``tweetguard_actions_total{policy,action}``          decision-tier actions (review / remove; none is not counted)
- ``tweetguard_score{policy}``                         histogram of calibrated probabilities, 0.05-wide buckets
- ``tweetguard_refusals_total{status,code}``           requests refused (4xx / 503), by status and error code
- ``tweetguard_cache_lookups_total{result}``           exact-repeat cache hits / misses (hit rate = hit / all)
- ``tweetguard_batch_requests`` / ``tweetguard_batch_texts``  histograms per model call: requests merged, texts
- ``tweetguard_model_call_seconds``                    histogram of model call durations (one per merged batch)
- ``tweetguard_feedback_verdicts_total{policy,outcome}``  verdicts (POST /feedback) against the decision's flag:
                                                        upheld, overturned, missed, agreed, unsure
- ``tweetguard_model_info{model_name,version,...}``    1 for the served model (an info metric as a gauge: the
                                                        multiprocess mode has no Info type)
Label values are fixed sets (policies, actions, status codes, our error codes), never request content.
"""

from __future__ import annotations

from collections.abc import Iterable

import bentoml

from serving.artifact import TIERS, decide

SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))

TEXTS = bentoml.metrics.Counter(name="tweetguard_texts_scored", documentation="Texts scored",
                                labelnames=["endpoint"])
TRUNCATED = bentoml.metrics.Counter(name="tweetguard_truncated_texts",
                                    documentation="Texts longer than the model window (tail not scored)",
                                    labelnames=["endpoint"])
FLAGS = bentoml.metrics.Counter(name="tweetguard_flags", documentation="Flags raised per policy",
                                labelnames=["policy"])
ACTIONS = bentoml.metrics.Counter(name="tweetguard_actions", documentation="Decision-tier actions per policy",
                                  labelnames=["policy", "action"])
SCORES = bentoml.metrics.Histogram(name="tweetguard_score", documentation="Calibrated probability per policy",
                                   labelnames=["policy"], buckets=SCORE_BUCKETS)
REFUSALS = bentoml.metrics.Counter(name="tweetguard_refusals", documentation="Requests refused, by status and code",
                                   labelnames=["status", "code"])
CACHE = bentoml.metrics.Counter(name="tweetguard_cache_lookups", documentation="Exact-repeat cache lookups",
                                labelnames=["result"])
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_REQUESTS = bentoml.metrics.Histogram(name="tweetguard_batch_requests",
                                           documentation="Requests merged into one model call", buckets=_SIZES)
BATCH_TEXTS = bentoml.metrics.Histogram(name="tweetguard_batch_texts", documentation="Texts in one model call",
                                        buckets=_SIZES)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
CALL_SECONDS = bentoml.metrics.Histogram(name="tweetguard_model_call_seconds",
                                         documentation="Duration of one model call (a merged batch)", buckets=_SECONDS)
VERDICTS = bentoml.metrics.Counter(name="tweetguard_feedback_verdicts",
                                   documentation="Moderators' verdicts per policy: upheld / overturned a flag, "
                                   "missed (true, not flagged), agreed (false, not flagged), unsure",
                                   labelnames=["policy", "outcome"])
MODEL_INFO = bentoml.metrics.Gauge(name="tweetguard_model_info", documentation="The served model (value 1)",
                                   labelnames=["model_name", "version", "card_schema", "predict_path"])


def record_results(results: Iterable, endpoint: str) -> None:
    """Count one request's `TextResult`s."""
    n = truncated = 0
    for r in results:
        n += 1
        truncated += r.truncated
        for policy, score in r.scores.items():
            SCORES.labels(policy=policy).observe(score)
            if r.flags[policy]:
                FLAGS.labels(policy=policy).inc()
            if r.actions[policy] in TIERS:
                ACTIONS.labels(policy=policy, action=r.actions[policy]).inc()
    TEXTS.labels(endpoint=endpoint).inc(n)
    if truncated:
        TRUNCATED.labels(endpoint=endpoint).inc(truncated)


def record_cache(hits: int, misses: int) -> None:
    if hits:
        CACHE.labels(result="hit").inc(hits)
    if misses:
        CACHE.labels(result="miss").inc(misses)


def record_refusal(status: int, code: str) -> None:
    REFUSALS.labels(status=str(status), code=code).inc()


def record_model_call(requests: int, texts: int, seconds: float) -> None:
    BATCH_REQUESTS.observe(requests)
    BATCH_TEXTS.observe(texts)
    CALL_SECONDS.observe(seconds)


def record_model(model_name: str, version: str, card_schema: int, predict_path: str) -> None:
    MODEL_INFO.labels(model_name=model_name, version=version, card_schema=str(card_schema),
                      predict_path=predict_path).set(1)


def verdict_outcome(label, flagged: bool) -> str:
    """A verdict's label against the decision's flag: upheld / overturned / missed / agreed / unsure."""
    if label == "unsure":
        return "unsure"
    return ("upheld" if label else "overturned") if flagged else ("missed" if label else "agreed")


def verdict_outcomes(decision: dict, labels: dict) -> dict[str, tuple[str, str]]:
    """Per labelled policy: (the verdict's outcome, the decision's action), with the decision's flags and actions
    from its own thresholds and tiers by the card's rule (`serving.artifact.decide`)."""
    scores = decision["scores"]
    flags, actions = decide(scores, decision["thresholds"], {p: decision["tiers"].get(p, {}) for p in scores})
    return {p: (verdict_outcome(label, flags[p]), actions[p]) for p, label in labels.items()}


def record_verdict(decision: dict, labels: dict) -> None:
    """Count one new verdict per labelled policy."""
    for policy, (outcome, _) in verdict_outcomes(decision, labels).items():
        VERDICTS.labels(policy=policy, outcome=outcome).inc()
