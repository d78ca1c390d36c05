"""The service's micro-batcher (serving.batcher) in a real event loop with the tiny model's Predictor: merging,
per-request rows, overload refusals (also by the service's guard, before the body), a failed call, a client that
went away."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.batcher import MicroBatcher, Overloaded
from serving.guard import RequestGuard
from serving.predictor import Predictor
from serving.schemas import ClassifyRequest, ServiceSettings


@pytest.fixture(scope="module")
def predictor(tiny_artifact) -> Predictor:
    return Predictor.load(tiny_artifact, batch_size=8, path="reference")


def _probs(rows) -> np.ndarray:
    return np.array([list(r["scores"].values()) for r in rows])


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_rows(predictor, mixed_texts):
    calls = []
    requests = [[f"{t} #{k}" for t in mixed_texts[k % 3:k % 3 + 1 + k % 4]] for k in range(24)]

    async def main():
        batcher = MicroBatcher(predictor.predict, max_size=16, max_latency_s=30,
                               on_call=lambda n_requests, n_texts, s: calls.append((n_requests, n_texts)))
        return await asyncio.gather(*(batcher.score(texts) for texts in requests))

    got = asyncio.run(main())
    for texts, rows in zip(requests, got):
        assert len(rows) == len(texts)
        np.testing.assert_allclose(_probs(rows), _probs(predictor.predict(texts)), atol=1e-6)  # no mix-ups
    assert sum(n for n, _ in calls) == len(requests) and sum(t for _, t in calls) == sum(map(len, requests))
    assert len(calls) < len(requests), calls  # merged
    assert all(t <= 16 for _, t in calls), calls  # max_size holds (no request here is larger)


def test_a_request_larger_than_max_size_is_scored_alone(predictor, mixed_texts):
    calls = []

    async def main():
        batcher = MicroBatcher(predictor.predict, max_size=2, max_latency_s=30,
                               on_call=lambda n, t, s: calls.append((n, t)))
        return await batcher.score(mixed_texts)

    rows = asyncio.run(main())
    assert len(rows) == len(mixed_texts) and calls == [(1, len(mixed_texts))]


def test_overload_is_refused_at_once_and_a_late_request_at_its_deadline():
    release = threading.Event()

    def slow(texts):  # holds the model call until released
        release.wait(10)
        return [len(t) for t in texts]

    async def main():
        batcher = MicroBatcher(slow, max_size=4, max_latency_s=0.05)
        batcher.observe(1, 0.2)  # 0.2 s per text measured
        first = asyncio.ensure_future(batcher.score(["a"]))  # starts at once (nothing ahead)
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(Overloaded, match="batch queue holds ~200 ms of work, the limit is 50 ms"):
            await batcher.score(["b"])  # 1 text running ahead: 0.2 s > 0.05 s
        refused_in = time.monotonic() - t0
        # The estimate can be too low: with a tiny measured cost the next request is admitted, then waits
        # behind the held call and is refused at its deadline, while that call still runs.
        batcher._seconds_per_text = 1e-6
        t1 = time.monotonic()
        with pytest.raises(Overloaded):
            await batcher.score(["c"])
        late_in = time.monotonic() - t1
        release.set()
        assert await first == [1]
        return refused_in, late_in, await batcher.score(["dd"])  # and serving goes on

    refused_in, late_in, after = asyncio.run(main())
    assert refused_in < 0.1 and 0.05 <= late_in < 0.5 and after == [2]


def test_the_guard_refuses_a_full_queue_before_reading_the_body():
    """The service's guard asks the batcher first: with a full queue the answer is 503 + Retry-After and neither
    the body nor the app behind the guard is touched; once the queue drains the same request passes."""
    release = threading.Event()
    settings = ServiceSettings.from_env({})
    routes = {"/classify": ClassifyRequest}

    def slow(texts):
        release.wait(10)
        return [len(t) for t in texts]

    async def through_guard(batcher) -> tuple[int, dict, list]:
        reached, sent = [], []

        async def app(scope, receive, send):
            reached.append((await receive())["body"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        async def receive():
            reached.append("body read")
            return {"type": "http.request", "body": b'{"text": "hi"}', "more_body": False}

        async def send(message):
            sent.append(message)

        guard = RequestGuard(app, settings=settings, routes=routes, token=None, queue_refusal=batcher.refusal)
        scope = {"type": "http", "method": "POST", "path": "/classify",
                 "headers": [(b"content-type", b"application/json")]}
        await guard(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), reached

    async def main():
        batcher = MicroBatcher(slow, max_size=4, max_latency_s=0.05)
        batcher.observe(1, 0.2)
        assert batcher.refusal() is None
        first = asyncio.ensure_future(batcher.score(["a"]))
        await asyncio.sleep(0.01)
        refused = await through_guard(batcher)
        release.set()
        await first
        return refused, await through_guard(batcher)

    (status, headers, reached), (status_after, _, reached_after) = asyncio.run(main())
    assert status == 503 and headers[b"retry-after"] == b"1" and reached == []
    assert status_after == 200 and reached_after == ["body read", b'{"text": "hi"}']


def test_a_failed_call_fails_its_requests_only_and_a_gone_client_is_skipped():
    seen = []

    def score(texts):
        seen.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("model call failed")
        time.sleep(0.05)
        return [t.upper() for t in texts]

    async def main():
        batcher = MicroBatcher(score, max_size=8, max_latency_s=30)
        first = asyncio.ensure_future(batcher.score(["x"]))
        await asyncio.sleep(0.01)  # "x" is in the model call; the next ones queue behind it
        gone = asyncio.ensure_future(batcher.score(["gone"]))
        bad = asyncio.ensure_future(batcher.score(["boom"]))
        await asyncio.sleep(0)
        gone.cancel()
        assert await first == ["X"]
        with pytest.raises(RuntimeError, match="model call failed"):
            await bad
        return await batcher.score(["y"])

    assert asyncio.run(main()) == ["Y"]
    assert seen == [["x"], ["boom"], ["y"]]  # the cancelled request never reached the model


def test_later_requests_wait_behind_plain_ones_and_are_refused_first():
    """Explained requests' copies (later lane) never go before a plain request, nor with one: a call takes the
    plain lane whenever it has requests, the later lane only when it is empty; a later request's wait estimate counts
    both lanes, a plain one's does not."""
    release, calls = threading.Event(), []

    def held(texts):
        release.wait(10)
        calls.append(list(texts))
        return [len(t) for t in texts]

    async def main():
        batcher = MicroBatcher(held, max_size=4, max_latency_s=30)
        first = asyncio.ensure_future(batcher.score(["x"]))  # the call in progress
        await asyncio.sleep(0.01)
        later = asyncio.ensure_future(batcher.score(["l1", "l2", "l3"], later=True))
        await asyncio.sleep(0.01)
        plain = [asyncio.ensure_future(batcher.score([f"p{i}"])) for i in range(2)]
        await asyncio.sleep(0.01)
        batcher.observe(1, 1.0)  # pretend 1 s per text: the later lane's 3 texts count for later requests only
        waits = batcher.expected_wait_s(), batcher.expected_wait_s(later=True)
        release.set()
        await asyncio.gather(first, later, *plain)
        return waits

    plain_wait, later_wait = asyncio.run(main())
    assert calls[0] == ["x"] and calls[1] == ["p0", "p1"] and calls[2] == ["l1", "l2", "l3"]
    # 1 s per text: a plain request waits for the running text and the 2 plain ones, a later one for 3 more.
    assert (plain_wait, later_wait) == (3.0, 6.0)


def test_the_later_lane_keeps_to_its_share_of_the_time_and_plain_calls_go_in_its_pauses():
    """With later_share 0.25, a later call of d seconds during which a plain request arrived is followed by a pause
    of 3 d before the next later call; plain requests are scored in the pause, and it counts in a later request's
    wait. With no plain request waiting, later calls follow each other at once."""
    calls = []

    def timed(texts):
        calls.append((time.monotonic(), list(texts)))
        time.sleep(0.1)
        return [len(t) for t in texts]

    async def main():
        batcher = MicroBatcher(timed, max_size=8, max_latency_s=30, later_max_size=2, later_share=0.25,
                               later_alone_size=2)
        alone = [asyncio.ensure_future(batcher.score([f"a{i}", f"b{i}"], later=True)) for i in range(2)]
        await asyncio.gather(*alone)  # no plain request: two later calls back to back
        later = asyncio.ensure_future(batcher.score(["l1", "l2", "l3", "l4"], later=True))  # alone: one call
        more = asyncio.ensure_future(batcher.score(["m1", "m2"], later=True))
        while len(calls) < 3:  # until l1-l4's call has started (however busy the machine)
            await asyncio.sleep(0.005)
        first = asyncio.ensure_future(batcher.score(["p1"]))  # arrives during l1-l4's call
        assert await first == [2]  # scored right after it (~0.1 s); then the later lane pauses 3 x 0.1 s
        await asyncio.sleep(0.05)
        in_pause = batcher.expected_wait_s(later=True)
        plain_sent = time.monotonic()
        plain = await batcher.score(["plain"])
        plain_wait = calls[-1][0] - plain_sent
        await asyncio.gather(later, more)
        return in_pause, plain, plain_wait

    in_pause, plain, plain_wait = asyncio.run(main())
    assert plain == [5] and plain_wait < 0.05  # a plain request does not wait for the later lane's pause
    texts = [t for _, t in calls]
    assert texts == [["a0", "b0"], ["a1", "b1"], ["l1", "l2", "l3", "l4"], ["p1"], ["plain"], ["m1", "m2"]]
    assert calls[1][0] - calls[0][0] < 0.25  # back to back (a pause would be 0.3 s): nobody waited for a0's call
    assert calls[5][0] - calls[2][0] >= 0.1 + 0.3 - 0.02  # m1 started after l1-l4's call and its 3x pause
    assert in_pause >= 0.15  # the rest of the pause (~0.2 s) counts in a later request's wait
    with pytest.raises(ValueError, match="later_share"):
        MicroBatcher(timed, max_size=8, max_latency_s=30, later_share=0)


def test_later_calls_are_short_only_while_plain_requests_come():
    """With no plain request about, an explained request's copies (sent as one-text later requests) go in one call
    up to later_alone_size; once a plain request waited for a later call, later calls take later_max_size texts,
    so the next decision waits for one short call only."""
    calls = []

    def timed(texts):
        calls.append(list(texts))
        time.sleep(0.05)
        return [len(t) for t in texts]

    async def main():
        batcher = MicroBatcher(timed, max_size=8, max_latency_s=30, later_max_size=1)
        await asyncio.gather(*(batcher.score([f"a{i}"], later=True) for i in range(4)))  # alone: one call
        later = [asyncio.ensure_future(batcher.score([f"b{i}"], later=True)) for i in range(4)]
        while len(calls) < 2:  # b0-b3's first call has started
            await asyncio.sleep(0.005)
        await batcher.score(["p"])  # arrives during it: from now on later calls are short
        await asyncio.gather(*later)

    asyncio.run(main())
    assert calls[0] == ["a0", "a1", "a2", "a3"]
    assert calls[1] == ["b0", "b1", "b2", "b3"] and calls[2] == ["p"]  # the call p waited for, then p
    calls.clear()

    async def contended():
        batcher = MicroBatcher(timed, max_size=8, max_latency_s=30, later_max_size=1)
        first = asyncio.ensure_future(batcher.score(["x"]))
        while not calls:
            await asyncio.sleep(0.005)
        later = [asyncio.ensure_future(batcher.score([f"c{i}"], later=True)) for i in range(3)]
        plain = asyncio.ensure_future(batcher.score(["q"]))  # scored while later work waits
        await asyncio.gather(first, plain, *later)

    asyncio.run(contended())
    assert calls == [["x"], ["q"], ["c0"], ["c1"], ["c2"]]  # later calls of one text while decisions come
