"""Novelty: how many earlier items said the same thing (same text key) within the horizon.

The rule, shared by batch and stream: order items by (ts, id); an item's ``novelty_n`` is the
number of items before it in that order with the same ``text_key`` and ``ts > item.ts - horizon``.
The aggregation turns ``novelty_n`` into a relevance penalty, so a story syndicated twenty times
does not count twenty times.
"""
from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence


def novelty_counts(entries: Sequence[tuple[float, str]], horizon_s: float) -> list[int]:
    """``novelty_n`` for each ``(ts_s, id)`` of one text key, returned in the input's order."""
    order = sorted(range(len(entries)), key=entries.__getitem__)
    times = [entries[i][0] for i in order]
    counts = [0] * len(entries)
    for rank, index in enumerate(order):
        first_inside = bisect.bisect_right(times, times[rank] - horizon_s, 0, rank)
        counts[index] = rank - first_inside
    return counts


class NoveltyTracker:
    """The same rule applied incrementally, for the streaming job.

    ``observe`` counts the earlier items seen so far; an item that arrives after a later one
    with the same key does not raise that later item's (already emitted) count. State is bounded:
    entries older than ``retention_s`` before the newest event time are forgotten, oldest first
    through a heap of (time, key), so forgetting costs O(log n) per item however many keys there are.
    """

    def __init__(self, horizon_s: float, retention_s: float | None = None) -> None:
        self.horizon_s = horizon_s
        self.retention_s = max(retention_s if retention_s is not None else 2 * horizon_s, horizon_s)
        self._seen: dict[str, list[tuple[float, str]]] = {}
        self._expiry: list[tuple[float, str]] = []  # heap: when each key's oldest entries may go
        self._newest = float("-inf")

    def observe(self, text_key: str, ts_s: float, item_id: str) -> int:
        entries = self._seen.setdefault(text_key, [])
        entry = (ts_s, item_id)
        position = bisect.bisect_left(entries, entry)
        # The same item again (a replay) gets the same answer and is not counted twice.
        if position == len(entries) or entries[position] != entry:
            entries.insert(position, entry)
            heapq.heappush(self._expiry, (ts_s, text_key))
        count = position - bisect.bisect_right(entries, ts_s - self.horizon_s, 0, position, key=_ts)
        self._newest = max(self._newest, ts_s)
        self._evict()
        return count

    def __len__(self) -> int:
        return sum(map(len, self._seen.values()))

    def _evict(self) -> None:
        cutoff = self._newest - self.retention_s
        while self._expiry and self._expiry[0][0] <= cutoff:
            _, key = heapq.heappop(self._expiry)
            entries = self._seen.get(key)
            if entries:
                del entries[: bisect.bisect_right(entries, cutoff, key=_ts)]
                if not entries:
                    del self._seen[key]


def _ts(entry: tuple[float, str]) -> float:
    return entry[0]
