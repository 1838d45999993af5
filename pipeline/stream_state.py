"""The streaming job's per-key state: one ``TickerState`` per ticker and one novelty tracker.

It lives in the job's process, next to the DuckDB writer and the offset ledger it must agree
with, and is rebuilt from DuckDB on restart. It was Beam keyed state first, but FnApiRunner's
state API hands a value over as bytes on every access, so each item re-encoded its ticker's
whole horizon: O(items in the horizon) per item (2 ms at 3,000 items, 10 ms at 30,000). Here an
in-order item costs O(1) amortised.

Late items restate (docs/aggregation.md, "Late items and restatement"): an item whose cadence
bucket is older than its ticker's latest point is kept in the ticker's history, and at the end of
the fold the ticker's points from that bucket to its latest are recomputed by replaying the
history in event-time order into a fresh ``TickerState`` (the one incremental form; no second
copy of the math), seeded at the first restated point so that earlier points are not recomputed. Points older than the allowed lateness before the ticker's latest point are
final: an item that would change one is still folded into the later points and counted as late.
So a ticker's history holds its items younger than horizon + allowed lateness before its latest
point, and the novelty tracker the text keys seen within two horizons.
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from connectors.duckdb.sink import DuckDBSink
from models.aggregation import AggregationConfig, SentimentPoint, TickerState
from models.aggregation_config import grid_ceil
from pipeline.novelty import NoveltyTracker

TickerRow = tuple[str, str, float, float, float]  # (ticker, item_id, ts_s, score, relevance)
_ItemRow = tuple[float, str, float, float]  # (ts_s, item_id, score, relevance): event-time order


@dataclass
class _History:
    """One ticker's items that a restatement may need, in (ts, id) order."""

    rows: list[_ItemRow] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def insert(self, row: _ItemRow) -> None:
        if not self.rows or self.rows[-1] <= row:
            self.rows.append(row)
        else:
            bisect.insort(self.rows, row)
        self.ids.add(row[1])

    def forget_until(self, cutoff_s: float) -> None:
        """Drop the items with ts <= cutoff_s."""
        end = bisect.bisect_right(self.rows, cutoff_s, key=_ts)
        if end:
            self.ids.difference_update(row[1] for row in self.rows[:end])
            del self.rows[:end]

    def since(self, after_s: float) -> list[_ItemRow]:
        """The items with ts > after_s, in event-time order."""
        return self.rows[bisect.bisect_right(self.rows, after_s, key=_ts):]


def _ts(row: _ItemRow) -> float:
    return row[0]


@dataclass
class Folded:
    """What one fold produced: the points to upsert (the last version of a point last) and how
    many items came later than the allowed lateness (some final points do not count them)."""

    points: list[SentimentPoint]
    late: int


class StreamState:
    """Thread-safe: the runner may process bundles of several partitions on several threads."""

    def __init__(self, cfg: AggregationConfig, allowed_lateness_s: float | None = None) -> None:
        self.cfg = cfg
        self.allowed_lateness_s = cfg.horizon_s if allowed_lateness_s is None else allowed_lateness_s
        if not self.allowed_lateness_s >= 0:
            raise ValueError(f"allowed lateness must be >= 0: {allowed_lateness_s}")
        self.tickers: dict[str, TickerState] = {}
        self.histories: dict[str, _History] = {}
        self.novelty = NoveltyTracker(cfg.horizon_s)
        self._lock = threading.Lock()

    def novelty_n(self, text_key: str, ts_s: float, item_id: str) -> int:
        """Earlier items with this text key within the horizon (see ``pipeline.novelty``)."""
        with self._lock:
            return self.novelty.observe(text_key, ts_s, item_id)

    def fold(self, rows: Iterable[TickerRow]) -> Folded:
        """Fold scored items into their tickers' states; returns every point they changed.

        In-order items (bucket at or after the ticker's latest point) update the incremental
        state; late ones mark their ticker for a restatement at the end of the fold, from the
        item's bucket (or the oldest point still open) to the ticker's latest point. An item id
        the ticker's history already holds is a replay and changes nothing.
        """
        with self._lock:
            points: list[SentimentPoint] = []
            late = 0
            restate_from: dict[str, float] = {}
            touched: set[str] = set()
            for ticker, item_id, ts_s, score, relevance in rows:
                touched.add(ticker)
                history = self.histories.setdefault(ticker, _History())
                if item_id in history.ids:
                    continue
                state = self.tickers.get(ticker)
                latest = None if state is None else state.last_emitted
                bucket = grid_ceil(ts_s, self.cfg.cadence_s)
                if latest is None or (bucket >= latest and ticker not in restate_from):
                    if state is None:
                        state = self.tickers[ticker] = TickerState(ticker, self.cfg)
                    points += state.add(item_id, ts_s, score, relevance)
                    history.insert((ts_s, item_id, score, relevance))
                    continue
                if bucket < latest:
                    oldest_open = self._oldest_open_point(latest)
                    if bucket < oldest_open:
                        late += 1
                        if ts_s <= oldest_open - self.cfg.horizon_s:
                            continue  # only final points have it in their horizon
                        bucket = oldest_open
                restate_from[ticker] = min(bucket, restate_from.get(ticker, bucket))
                history.insert((ts_s, item_id, score, relevance))
            for ticker, start in restate_from.items():
                points += self._restate(ticker, start)
            for ticker in touched:
                self._forget_old(ticker)
            return Folded(points, late)

    def restore(self, rows: Iterable[TickerRow]) -> list[SentimentPoint]:
        """Load stored items (each ticker's newest ones) and recompute every open point of their tickers."""
        with self._lock:
            for ticker, item_id, ts_s, score, relevance in rows:
                self.histories.setdefault(ticker, _History()).insert((ts_s, item_id, score, relevance))
            points: list[SentimentPoint] = []
            for ticker, history in self.histories.items():
                if history.rows:
                    latest = grid_ceil(history.rows[-1][0], self.cfg.cadence_s)
                    points += self._restate(ticker, self._oldest_open_point(latest))
                    self._forget_old(ticker)
            return points

    def _oldest_open_point(self, latest: float) -> float:
        """The oldest grid point that may still be rewritten: the first after latest - lateness."""
        cadence = self.cfg.cadence_s
        frozen = grid_ceil(latest - self.allowed_lateness_s, cadence)
        if frozen > latest - self.allowed_lateness_s:
            return frozen
        return (round(frozen / cadence) + 1) * cadence

    def _restate(self, ticker: str, start: float) -> list[SentimentPoint]:
        """The ticker's final points from grid point ``start`` on, and its new state: the items of
        start's horizon seed a fresh ``TickerState`` at start, later ones are added in event-time
        order."""
        state = TickerState(ticker, self.cfg)
        rows = self.histories[ticker].since(start - self.cfg.horizon_s)
        at_start = bisect.bisect_right(rows, start, key=_ts)
        points = state.seed([(item_id, ts_s, score, relevance) for ts_s, item_id, score, relevance in rows[:at_start]],
                            start)
        for ts_s, item_id, score, relevance in rows[at_start:]:
            points += state.add(item_id, ts_s, score, relevance)
        if state.last_emitted is None:  # no item reaches an open point: the state stands
            return []
        self.tickers[ticker] = state
        final = {(point.ts_s, point.half_life_s): point for point in points}
        return list(final.values())

    def _forget_old(self, ticker: str) -> None:
        state = self.tickers.get(ticker)
        if state is not None and state.last_emitted is not None:
            oldest_open = self._oldest_open_point(state.last_emitted)
            self.histories[ticker].forget_until(oldest_open - self.cfg.horizon_s)


def rebuild_state(sink: DuckDBSink, cfg: AggregationConfig,
                  allowed_lateness_s: float | None = None) -> tuple[StreamState, int, list[SentimentPoint]]:
    """Replay the stored items a restatement may need, per ticker in event-time order.

    Returns the state, how many items were replayed, and every point that may still be
    rewritten (as-of time within the allowed lateness of its ticker's latest point), recomputed
    from the stored items: upserting them restores any point that a crash, or an earlier
    version of the job, kept from being written after its items.
    """
    state = StreamState(cfg, allowed_lateness_s)
    newest = sink.con.execute("SELECT epoch(max(ts)) FROM items").fetchone()[0]
    if newest is None:
        return state, 0, []
    retention = state.allowed_lateness_s + cfg.horizon_s + cfg.cadence_s
    novelty_rows = sink.con.execute(
        "SELECT i.id, epoch(i.ts), i.text_key FROM items i WHERE epoch(i.ts) > ? ORDER BY i.ts, i.id",
        [newest - cfg.horizon_s - cfg.cadence_s]).fetchall()
    for item_id, ts_s, text_key in novelty_rows:
        state.novelty_n(text_key, ts_s, item_id)
    rows = sink.con.execute(
        "SELECT ticker, id, ts_s, score, relevance FROM ("
        "  SELECT t.ticker, i.id, epoch(i.ts) AS ts_s, i.score, i.relevance,"
        "         max(epoch(i.ts)) OVER (PARTITION BY t.ticker) AS newest_s"
        "  FROM items i JOIN item_tickers t ON t.item_id = i.id)"
        " WHERE ts_s > newest_s - ? ORDER BY ticker, ts_s, id", [retention]).fetchall()
    points = state.restore(rows)
    replayed = len({row[1] for row in rows} | {row[0] for row in novelty_rows})
    return state, replayed, points
