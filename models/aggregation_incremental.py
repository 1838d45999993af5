"""Incremental recency attention for the streaming job: one small state per ticker.

Per half-life it keeps the decayed sums D = sum e_i, N = sum e_i s_i and Q = sum e_i^2 with
e_i = exp(kappa_i - ref), kappa_i = r_i + ln2 (t_i - anchor) / h, so an update costs O(1) and
S = N / D, ess = D^2 / Q at any as-of time (docs/aggregation.md proves it equals the batch
softmax). The in-horizon items, kept in time order, let expired items be subtracted, and a
small set of top-k candidates keeps the explanation without sorting the horizon.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from models.aggregation_config import (LN2, AggregationConfig, SentimentPoint, from_us, grid_ceil,
                                       in_horizon, to_us)

# Recompute the sums from the kept items when the mass subtracted since the last recompute exceeds
# the remaining mass by this factor: the relative error stays below ~1e-12.
_CANCELLATION_LIMIT = 1e4
# The reference logit moves up only when a new logit exceeds it by this much: terms stay below
# e^50 (no overflow for any count) and rescaling, which touches every candidate, stays rare.
_RESCALE_HEADROOM = 50.0


class _HalfLifeSums:
    """D, N, Q for one half-life, relative to the reference logit ``ref`` (rescaled upward)."""

    __slots__ = ("ref", "den", "num", "sq", "removed", "removed_sq", "candidates", "candidate_ids",
                 "newest_ts")

    def __init__(self) -> None:
        self.ref = 0.0
        self.den = self.num = self.sq = 0.0
        self.removed = self.removed_sq = 0.0
        # top-k candidates sorted by (-kappa, item_id): [neg_kappa, item_id, ts, beaten_by, e]
        self.candidates: list[list] = []
        self.candidate_ids: set[str] = set()
        self.newest_ts = -math.inf  # newest ts ever offered: bounds every candidate's ts

    def add(self, kappa: float, score: float) -> float:
        """Add e = exp(kappa - ref) to the sums and return it."""
        if self.den == 0.0 or kappa > self.ref + _RESCALE_HEADROOM:
            factor = math.exp(self.ref - kappa) if self.den else 0.0
            self.den *= factor
            self.num *= factor
            self.removed *= factor
            for entry in self.candidates:
                entry[4] *= factor
            factor *= factor
            self.sq *= factor
            self.removed_sq *= factor
            self.ref = kappa
        e = math.exp(kappa - self.ref)
        self.den += e
        self.num += e * score
        self.sq += e * e
        return e

    def subtract(self, kappa: float, score: float) -> None:
        e = math.exp(kappa - self.ref)
        self.den -= e
        self.num -= e * score
        self.sq -= e * e
        self.removed += e
        self.removed_sq += e * e

    def cancelled(self) -> bool:
        return (self.den <= 0.0 or self.sq <= 0.0
                or self.removed > _CANCELLATION_LIMIT * self.den
                or self.removed_sq > _CANCELLATION_LIMIT * self.sq)

    def recompute(self, kappas: list[float], scores: list[float]) -> None:
        self.ref = max(kappas)
        es = [math.exp(k - self.ref) for k in kappas]
        self.den = math.fsum(es)
        self.num = math.fsum(e * s for e, s in zip(es, scores))
        self.sq = math.fsum(e * e for e in es)
        self.removed = self.removed_sq = 0.0
        for entry in self.candidates:
            entry[4] = math.exp(-entry[0] - self.ref)

    def offer_candidate(self, neg_kappa: float, item_id: str, ts_s: float, k: int,
                        e: float) -> None:
        """Keep an item while fewer than k items that rank above it expire no earlier than it.

        For an item newer than every candidate (the in-order stream) only the candidates ranked
        below it change: each gains one dominator, and one with k is dropped, so the work is
        amortised O(k) per item. Ties in time and late items take the general path.
        """
        entry = [neg_kappa, item_id, ts_s, 0, e]
        position = bisect.bisect_left(self.candidates, entry)
        if ts_s > self.newest_ts:
            self.newest_ts = ts_s
            self.candidate_ids.add(item_id)
            if position == len(self.candidates):
                self.candidates.append(entry)
                return
            below = self.candidates[position:]
            for other in below:
                other[3] += 1
            kept = [other for other in below if other[3] < k]
            if len(kept) < len(below):
                self.candidate_ids.difference_update(
                    other[1] for other in below if other[3] >= k)
            self.candidates[position:] = [entry, *kept]
            return
        for other in self.candidates[:position]:  # ranked above: dominate it if no older
            if other[2] >= ts_s:
                entry[3] += 1
        survivors = self.candidates[:position]
        for other in self.candidates[position:]:  # ranked below: it dominates those no newer
            if ts_s >= other[2]:
                other[3] += 1
                if other[3] >= k:
                    self.candidate_ids.discard(other[1])
                    continue
            survivors.append(other)
        if entry[3] < k:
            survivors.insert(position, entry)
            self.candidate_ids.add(item_id)
        self.candidates = survivors

    def drop_candidate(self, item_id: str) -> None:
        if item_id in self.candidate_ids:
            self.candidate_ids.discard(item_id)
            self.candidates = [entry for entry in self.candidates if entry[1] != item_id]


class TickerState:
    """Streaming S_k(t) for one ticker at every grid point and half-life; picklable and compact when pickled.

    ``add`` returns the points that became due. The newest, ceil(ts), is provisional: a later
    item in the same cadence bucket re-emits it (the sink upserts). An item older than the last
    emitted point joins the state for future points but does not rewrite emitted history; one
    already outside the horizon of the last emitted point is ignored, and so is an item_id the
    horizon already holds (a replay).
    """

    def __init__(self, ticker: str, cfg: AggregationConfig) -> None:
        self.ticker = ticker
        self.cfg = cfg
        self.anchor: float | None = None  # first item's ts: keeps kappa small and exact
        self.last_emitted: float | None = None
        # the horizon as parallel lists in time order; entries before `head` have expired
        self.head = 0
        self.item_ts: list[float] = []
        self.item_id_list: list[str] = []
        self.item_scores: list[float] = []
        self.item_kappas: list[list[float]] = [[] for _ in cfg.half_lives_s]
        self.item_ids: set[str] = set()
        self.score_sum = 0.0
        self.sums = [_HalfLifeSums() for _ in cfg.half_lives_s]
        self.rates = [LN2 / h for h in cfg.half_lives_s]  # kappa = r + rate * (t - anchor)

    def __getstate__(self) -> dict:
        """Flat lists of floats and strings, expired prefix dropped: what a pickle of the state holds."""
        state = dict(self.__dict__)
        head = state.pop("head")
        del state["item_ids"]
        for key in ("item_ts", "item_id_list", "item_scores"):
            state[key] = state[key][head:]
        state["item_kappas"] = [kappas[head:] for kappas in self.item_kappas]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.head = 0
        self.item_ids = set(self.item_id_list)

    def __len__(self) -> int:
        """Items inside the horizon of the last emitted point."""
        return len(self.item_ts) - self.head

    def seed(self, items: Sequence[tuple[str, float, float, float]], as_of_s: float) -> list[SentimentPoint]:
        """Start an empty state at grid point ``as_of_s`` from (item_id, ts, score, relevance) in
        time order, emitting only the point at ``as_of_s`` (none when its horizon is empty).

        The state is then the one ``add`` would have reached after the same items and no later
        one, without computing the points before ``as_of_s`` (a restatement starts there).
        """
        if self.last_emitted is not None or len(self):
            raise ValueError("seed starts an empty state")
        for item_id, ts_s, score, relevance in items:
            if in_horizon(ts_s, as_of_s, self.cfg.horizon_s) and item_id not in self.item_ids:
                if self.anchor is None:
                    self.anchor = ts_s
                self._insert(item_id, ts_s, score, relevance)
        points: list[SentimentPoint] = []
        if len(self):
            self.last_emitted = as_of_s
            self._emit(as_of_s, points)
        return points

    def add(self, item_id: str, ts_s: float, score: float,
            relevance: float) -> list[SentimentPoint]:
        if not (math.isfinite(ts_s) and math.isfinite(score) and math.isfinite(relevance)):
            raise ValueError(f"item {item_id!r}: ts, score and relevance must be finite")
        if item_id in self.item_ids:
            return []
        cfg = self.cfg
        bucket = grid_ceil(ts_s, cfg.cadence_s)
        if self.anchor is None:
            self.anchor = ts_s
        points: list[SentimentPoint] = []
        if self.last_emitted is not None and bucket < self.last_emitted:  # late item
            if not in_horizon(ts_s, self.last_emitted, cfg.horizon_s):
                return []
            self._insert(item_id, ts_s, score, relevance)
            self._emit(self.last_emitted, points)
            return points
        if self.last_emitted is not None and bucket > self.last_emitted:
            step = to_us(self.last_emitted) // cfg.cadence_us + 1  # grid points in exact µs
            t = from_us(step * cfg.cadence_us)
            while t < bucket and len(self):
                self._expire(t)
                if not len(self):
                    break
                self._emit(t, points)
                step += 1
                t = from_us(step * cfg.cadence_us)
        if bucket != self.last_emitted:  # else the horizon was already cut at this bucket
            self._expire(bucket)
        if in_horizon(ts_s, bucket, cfg.horizon_s):  # ts_s <= bucket by construction
            self._insert(item_id, ts_s, score, relevance)
        self.last_emitted = bucket
        if len(self):
            self._emit(bucket, points)
        return points

    def _insert(self, item_id: str, ts_s: float, score: float, relevance: float) -> None:
        offset = ts_s - self.anchor
        kappas = [relevance + rate * offset for rate in self.rates]
        times = self.item_ts
        if len(times) == self.head or times[-1] <= ts_s:
            times.append(ts_s)
            self.item_id_list.append(item_id)
            self.item_scores.append(score)
            for column, kappa in zip(self.item_kappas, kappas):
                column.append(kappa)
        else:  # out of order: insert at its time position (a bisection: producers may send any order)
            position = bisect.bisect_right(times, ts_s, self.head)
            times.insert(position, ts_s)
            self.item_id_list.insert(position, item_id)
            self.item_scores.insert(position, score)
            for column, kappa in zip(self.item_kappas, kappas):
                column.insert(position, kappa)
        self.item_ids.add(item_id)
        self.score_sum += score
        k = self.cfg.top_k
        for sums, kappa in zip(self.sums, kappas):
            e = sums.add(kappa, score)
            if k:
                sums.offer_candidate(-kappa, item_id, ts_s, k, e)

    def _expire(self, as_of_s: float) -> None:
        cutoff_us = to_us(as_of_s) - self.cfg.horizon_us  # in_horizon_us: kept iff cutoff < t_i
        times, head = self.item_ts, self.head
        if head == len(times) or cutoff_us < to_us(times[head]):
            return
        while head < len(times) and not (cutoff_us < to_us(times[head])):
            item_id, score = self.item_id_list[head], self.item_scores[head]
            self.item_ids.discard(item_id)
            self.score_sum -= score
            for sums, column in zip(self.sums, self.item_kappas):
                sums.subtract(column[head], score)
                sums.drop_candidate(item_id)
            head += 1
        if head == len(times):
            self._clear()
            return
        if head > 1024 and 2 * head > len(times):  # compact: drop the expired prefix
            for column in (times, self.item_id_list, self.item_scores, *self.item_kappas):
                del column[:head]
            head = 0
        self.head = head
        for sums, column in zip(self.sums, self.item_kappas):
            if sums.cancelled():
                sums.recompute(column[head:], self.item_scores[head:])

    def _clear(self) -> None:
        self.head = 0
        for column in (self.item_ts, self.item_id_list, self.item_scores, *self.item_kappas):
            column.clear()
        self.score_sum = 0.0
        for sums in self.sums:
            sums.den = sums.num = sums.sq = sums.removed = sums.removed_sq = 0.0

    def _emit(self, as_of_s: float, points: list[SentimentPoint]) -> None:
        n = len(self)
        mean_score = self.score_sum / n
        k = self.cfg.top_k
        for h, sums in zip(self.cfg.half_lives_s, self.sums):
            den = sums.den
            top = tuple([(entry[1], entry[4] / den) for entry in sums.candidates[:k]])
            points.append(SentimentPoint(self.ticker, as_of_s, h, sums.num / den, n,
                                         den * den / sums.sq, mean_score, top))
