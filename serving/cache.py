"""The exact-repeat cache: moderation traffic repeats itself (retweets, copy-paste waves), and a text scored once
need not be scored again by the same model.

An LRU keyed by (model version, normalized text) — `normalize_tweet` is what the model sees, so texts that differ
only in what normalization removes (user handles, URLs, zero-width characters) share an entry — holding the
text's scores and truncation. Bounded by entries (`TWEETGUARD_CACHE_SIZE`, 0 = off); at the 4,000-character
text limit 10,000 entries hold at most ~80 MB of keys. Flags and actions are decided per request after the
lookup, so per-request thresholds apply to cached scores too. Used from the service's event loop only (no lock).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class ScoreCache(Generic[V]):
    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"cache size must be >= 1 (0 means no cache: do not build one), got {size}")
        self.size = size
        self._entries: OrderedDict[tuple[str, str], V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str]) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)  # least recently used
