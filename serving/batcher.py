"""In-process micro-batching for the service: the texts of concurrent requests merged into one model call.

One asyncio task in the service's event loop takes the waiting requests, in arrival order, up to `max_size`
texts (a larger single request goes alone: the Predictor splits it into its own batches), and runs the model
on them in one worker thread, so the event loop keeps parsing and answering HTTP meanwhile. There is no linger
timer: while one call runs, the requests that arrive form the next batch, so a lone request is scored at once
and a loaded server batches by itself.

Overload is refused, never queued without bound: a request whose expected wait before its model call starts
(the texts ahead of it times the measured seconds per text) is over `max_latency_s` is refused at once with
`Overloaded`; the service's guard asks the same question (`refusal()`) before it reads a body, so most
refusals cost only the headers. One still waiting `max_latency_s` after it arrived (an estimate that was too
low, e.g. when other work takes the cores) is refused right then by a timer, so a refusal never takes much
longer than `max_latency_s` and an accepted request waits at most that before its model call. The service's
in-flight limit bounds the number of waiting requests.

Two lanes: `score(texts, later=True)` (the occlusion copies of an explained request, serving.reasons, sent in small
chunks) waits behind every plain request. A model call holds one lane only: plain requests whenever any wait, and
later ones only when none does. While plain requests come (one waited for a later call, or was scored while later
work waited, within the last `_CONTENDED_HOLD_S`), a later call takes at most `later_max_size` texts (max_size // 8
by default), so a plain decision waits at most one short call for explanations; with no plain request about, later
calls take up to `later_alone_size` (max_size), so a lone explained request is not cut into many small calls. When
plain requests arrived during a later call of d seconds, the
later lane keeps to its share of the time (`later_share`): its next call waits d x (1 - share) / share (plain
calls go meanwhile), so explanations cannot keep every core busy while decisions are asked for; with no plain
request waiting, later calls follow each other at once. A later request's expected wait counts
both lanes, its own at that share (it is refused when that is over `max_latency_s`); a plain request's counts the
plain lane and the call in progress.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Row = TypeVar("Row")

_SMOOTHING = 0.2  # weight of the newest model call in the seconds-per-text estimate
_CONTENDED_HOLD_S = 1.0  # after plain and later work last met, later calls stay short this long


class Overloaded(Exception):
    """The batch queue holds more work than the latency limit allows; the caller answers 503 + Retry-After."""


@dataclass
class _Waiting:
    texts: Sequence[str]
    future: asyncio.Future
    since: float = field(default_factory=time.monotonic)
    deadline: asyncio.TimerHandle | None = None
    later: bool = False  # the lane behind plain requests


class MicroBatcher(Generic[Row]):
    """`await batcher.score(texts)` -> one row per text, from `score_fn(texts) -> rows` called in a worker thread
    with the texts of every request waiting at that moment (at most `max_size` texts, unless one request alone
    has more). `on_call(requests, texts, seconds)` is told the size and duration of each model call."""

    def __init__(self, score_fn: Callable[[list[str]], list[Row]], *, max_size: int, max_latency_s: float,
                 on_call: Callable[[int, int, float], None] | None = None, later_max_size: int | None = None,
                 later_share: float = 1.0, later_alone_size: int | None = None) -> None:
        if not 0 < later_share <= 1:
            raise ValueError(f"later_share must be in (0, 1], got {later_share}")
        self.score_fn, self.max_size, self.max_latency_s, self.on_call = score_fn, max_size, max_latency_s, on_call
        self.later_share = later_share  # of the time, what later calls may take while plain requests come
        self._later_from = 0.0  # monotonic time before which no later call starts (its share's pause)
        # Most later-lane texts in one call: a call of them is short, so a plain request arriving meanwhile waits
        # little (a later request larger than this still goes, alone).
        self.later_max_size = later_max_size or max(1, max_size // 8)
        self.later_alone_size = later_alone_size or max_size  # ... and with no plain request about
        self._contended_until = 0.0  # monotonic time until which later calls stay at later_max_size
        self._waiting: deque[_Waiting] = deque()
        self._later: deque[_Waiting] = deque()  # the lane behind every plain request
        self._queued = 0  # texts waiting in the plain lane
        self._queued_later = 0  # texts waiting in the later lane
        self._running = 0  # texts in the model call now
        self._seconds_per_text: float | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tweetguard-model")

    def observe(self, texts: int, seconds: float) -> None:
        """Feed a measured model call (also the warm-up call made before serving) into the wait estimate."""
        per_text = seconds / max(texts, 1)
        old = self._seconds_per_text
        self._seconds_per_text = per_text if old is None else (1 - _SMOOTHING) * old + _SMOOTHING * per_text

    def expected_wait_s(self, later: bool = False) -> float:
        """Seconds a request arriving now waits before its model call starts (0 until a call was measured); a
        `later` request waits behind both lanes."""
        per_text = self._seconds_per_text or 0.0
        wait = (self._queued + self._running) * per_text
        if later:  # its lane runs at its share of the time, after the current pause
            wait += self._queued_later * per_text / self.later_share + max(0.0, self._later_from - time.monotonic())
        return wait

    def refusal(self, later: bool = False) -> str | None:
        """Why a request arriving now would be refused (None: it is admitted). The service's guard asks this
        before it reads a body, so an overloaded server refuses at the cost of the headers alone."""
        wait = self.expected_wait_s(later)
        return self._refusal(wait) if wait > self.max_latency_s else None

    async def score(self, texts: Sequence[str], later: bool = False) -> list[Row]:
        if (why := self.refusal(later)) is not None:
            raise Overloaded(why)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tweetguard-batcher")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(texts, loop.create_future(), later=later)
        waiting.deadline = loop.call_later(self.max_latency_s, self._expire, waiting)
        if later:
            self._later.append(waiting)
            self._queued_later += len(texts)
        else:
            self._waiting.append(waiting)
            self._queued += len(texts)
        self._wake.set()
        return await waiting.future

    def _expire(self, waiting: _Waiting) -> None:
        """Still queued at its deadline: refused now (not when its turn would come)."""
        lane = self._later if waiting.later else self._waiting
        if waiting in lane:
            lane.remove(waiting)
            if waiting.later:
                self._queued_later -= len(waiting.texts)
            else:
                self._queued -= len(waiting.texts)
            if not waiting.future.done():
                waiting.future.set_exception(Overloaded(self._refusal(time.monotonic() - waiting.since)))

    def _refusal(self, wait_s: float) -> str:
        return (f"overloaded: the batch queue holds ~{wait_s * 1e3:.0f} ms of work, the limit is "
                f"{self.max_latency_s * 1e3:.0f} ms (TWEETGUARD_BATCH_MAX_LATENCY_MS); retry later")

    def _take(self) -> list[_Waiting]:
        """The next call's requests, one lane only: the plain lane in arrival order up to max_size texts, or, when
        it is empty, the later lane up to later_max_size while plain requests come, else later_alone_size (a larger
        single request goes alone)."""
        lane = self._waiting or self._later
        now = time.monotonic()
        if lane is self._waiting and self._later:  # decisions are asked for while explanations wait
            self._contended_until = now + _CONTENDED_HOLD_S
        if lane is self._waiting:
            limit = self.max_size
        else:
            limit = self.later_max_size if now < self._contended_until else self.later_alone_size
        batch, size = [], 0
        while lane and (not batch or size + len(lane[0].texts) <= limit):
            w = lane.popleft()
            if w.later:
                self._queued_later -= len(w.texts)
            else:
                self._queued -= len(w.texts)
            w.deadline.cancel()
            if w.future.done():  # the client went away (its handler was cancelled)
                continue
            batch.append(w)
            size += len(w.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting and not self._later:
                self._wake.clear()
                await self._wake.wait()
                continue
            pause = self._later_from - time.monotonic()
            if not self._waiting and pause > 0:  # only later work, within its share's pause: a plain one may come
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), pause)
                except TimeoutError:
                    pass
                continue
            batch = self._take()
            if not batch:
                continue
            texts = [t for w in batch for t in w.texts]
            self._running = len(texts)
            t0 = time.perf_counter()
            try:
                rows = await loop.run_in_executor(self._executor, self.score_fn, texts)
            except Exception as e:  # noqa: BLE001 - the error belongs to the requests of this call
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(e)
                continue
            finally:
                self._running = 0
            seconds = time.perf_counter() - t0
            if batch[0].later and self._waiting:  # decisions waited for it: explanations yield the cores a while
                self._later_from = time.monotonic() + seconds * (1 - self.later_share) / self.later_share
                self._contended_until = time.monotonic() + _CONTENDED_HOLD_S
            self.observe(len(texts), seconds)
            if self.on_call is not None:
                self.on_call(len(batch), len(texts), seconds)
            start = 0
            for w in batch:
                if not w.future.done():
                    w.future.set_result(rows[start:start + len(w.texts)])
                start += len(w.texts)
