"""What a backfill into a DuckDB file that already holds items must read of them.

A backfill's dedupe, novelty and points otherwise see only the run's own items. Into a file that
already holds items, that stored a second copy's tickers beside the first copy's text, counted a
stored syndicated copy as new, and wrote points from the run's items alone, so they disagreed
with ``sentiment_asof`` over the stored items. These steps read the stored items instead: an id
already stored is a duplicate (the first write stays), novelty counts the stored copies, and each
point the run's items affect is recomputed over the stored items and the run's together.

The reads open the file read-only, once per bundle, and close it at the bundle's end. The writer
opens the file only after them: it sits behind a GroupByKey that every one of these steps feeds.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from connectors.duckdb import arrow_rows
from connectors.duckdb.sink import DuckDBSink
from connectors.records import Item
from models.aggregation import (AggregationConfig, ItemRow, RelevanceConfig, SentimentPoint, aggregate_tickers,
                                relevance)
from pipeline.novelty import novelty_counts

LOOKUP_BATCH = 1000  # ids, text keys or tickers per query


class StoredItems:
    """Reads of the items a backfill's file already holds, through ``con``."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    @classmethod
    def open(cls, db_path: str) -> "StoredItems":
        return cls(duckdb.connect(db_path, read_only=True))

    def ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these ids are stored."""
        rows = self.con.execute("SELECT id FROM items WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)])
        return {row[0] for row in rows.fetchall()}

    def copies(self, text_keys: Sequence[str]) -> dict[str, list[tuple[float, str]]]:
        """The stored ``(ts_s, id)`` of each text key."""
        found: dict[str, list[tuple[float, str]]] = {}
        for key, ts_s, item_id in self.con.execute(
                "SELECT text_key, epoch(ts), id FROM items WHERE text_key IN (SELECT unnest(?::VARCHAR[]))",
                [list(text_keys)]).fetchall():
            found.setdefault(key, []).append((ts_s, item_id))
        return found

    def ticker_rows(self, windows: dict[str, tuple[float, float]]) -> dict[str, list[ItemRow]]:
        """Each ticker's stored ``(id, ts_s, score, relevance)`` with ``lo <= ts_s <= hi``."""
        self.con.register("windows", pa.table({
            "ticker": list(windows), "lo": [lo for lo, _ in windows.values()],
            "hi": [hi for _, hi in windows.values()]}))
        try:
            rows = self.con.execute(
                "SELECT t.ticker, i.id, epoch(i.ts), i.score, i.relevance FROM item_tickers t"
                " JOIN windows w ON w.ticker = t.ticker JOIN items i ON i.id = t.item_id"
                " WHERE epoch(i.ts) BETWEEN w.lo AND w.hi").fetchall()
        finally:
            self.con.unregister("windows")
        found: dict[str, list[ItemRow]] = {}
        for ticker, *row in rows:
            found.setdefault(ticker, []).append(tuple(row))
        return found

    def close(self) -> None:
        self.con.close()


class _StoredFn(beam.DoFn):
    """Opens the stored items at a bundle's first element and closes them at its end."""

    def __init__(self, db_path: str) -> None:
        self._db_path = db_path
        self._stored: StoredItems | None = None

    def stored(self) -> StoredItems:
        if self._stored is None:
            self._stored = StoredItems.open(self._db_path)
        return self._stored

    def finish_bundle(self) -> None:
        if self._stored is not None:
            self._stored.close()
            self._stored = None

    def teardown(self) -> None:
        self.finish_bundle()


class _DropStoredIdsFn(_StoredFn):
    def __init__(self, db_path: str, namespace: str) -> None:
        super().__init__(db_path)
        self._duplicates = Metrics.counter(namespace, "duplicates")

    def process(self, batch: list[Item]) -> Iterator[Item]:
        stored = self.stored().ids([item.id for item in batch])
        self._duplicates.inc(sum(item.id in stored for item in batch))
        yield from (item for item in batch if item.id not in stored)


class DropStoredIds(beam.PTransform):
    """Items whose id the file already holds are duplicates: the stored copy stays, and the run's
    copy is neither written nor aggregated. Counted as ``duplicates`` in ``namespace``."""

    def __init__(self, db_path: str, namespace: str) -> None:
        super().__init__()
        self._db_path, self._namespace = db_path, namespace

    def expand(self, items: beam.PCollection[Item]) -> beam.PCollection[Item]:
        return (items
                | "Batch ids" >> beam.BatchElements(min_batch_size=1, max_batch_size=LOOKUP_BATCH)
                | "Drop stored ids" >> beam.ParDo(_DropStoredIdsFn(self._db_path, self._namespace)))


class NoveltyWithStoredFn(_StoredFn):
    """Batches of ``(text_key, run items)`` -> the run items with ``novelty_n`` counted over the
    run's copies and the stored ones (pipeline.novelty's rule; a stored copy keeps its own count)."""

    def __init__(self, db_path: str, horizon_s: float) -> None:
        super().__init__(db_path)
        self._horizon_s = horizon_s

    def process(self, batch: list[tuple[str, Iterable[Item]]]) -> Iterator[Item]:
        stored = self.stored().copies([key for key, _ in batch])
        for key, items in batch:
            run = list(items)
            counts = novelty_counts([(item.ts.timestamp(), item.id) for item in run] + stored.get(key, []),
                                    self._horizon_s)
            yield from (item.with_(novelty_n=n) for item, n in zip(run, counts))


class AggregateWithStoredFn(_StoredFn):
    """Batches of ``(ticker, run rows)`` -> ``affected_points`` over them and the stored items."""

    def __init__(self, db_path: str, cfg: AggregationConfig) -> None:
        super().__init__(db_path)
        self._cfg = cfg

    def process(self, batch: list[tuple[str, Iterable[ItemRow]]]) -> Iterator[SentimentPoint]:
        yield from affected_points(self.stored(), {ticker: list(rows) for ticker, rows in batch}, self._cfg)


def affected_points(stored: StoredItems, groups: dict[str, list[ItemRow]],
                    cfg: AggregationConfig) -> list[SentimentPoint]:
    """Every point a run row affects, over the run's rows and the stored ones: per ticker, as-of
    times from its earliest run row to a horizon after its latest (the points in between are
    recomputed too, to the values ``sentiment_asof`` gives). The run's rows must not be stored."""
    horizon_s = cfg.horizon_s
    bounds = {ticker: (min(row[1] for row in rows), max(row[1] for row in rows) + horizon_s)
              for ticker, rows in groups.items()}
    # A second wider each side, so that float rounding of stored times never leaves one out;
    # the aggregation applies the exact horizon itself.
    found = stored.ticker_rows({ticker: (first - horizon_s - 1.0, last + 1.0)
                                for ticker, (first, last) in bounds.items()})
    points = aggregate_tickers({ticker: [*rows, *found.get(ticker, [])] for ticker, rows in groups.items()}, cfg)
    return [point for point in points if bounds[point.ticker][0] <= point.ts_s <= bounds[point.ticker][1]]


def merge_parquet_run(sink: DuckDBSink, tables: dict[str, pa.Table], cfg: AggregationConfig) -> dict[str, int]:
    """Land a ``--parquet-out`` run's tables in a file that already holds items as a backfill into
    it lands its rows, in one transaction: items whose id is stored are dropped with their ticker
    rows, ``novelty_n`` and relevance are recounted with the stored copies, and the run's points
    give way to ``affected_points`` of its items under ``cfg``. Returns the new rows per table."""
    stored = StoredItems(sink.con)
    landing = {name: tables[name] for name in ("dead_letters",) if name in tables}
    items = tables.get("items")
    if items is not None and items.num_rows:
        already = pa.array(sorted(stored.ids(items["id"].to_pylist())), pa.string())
        items = _recount_novelty(stored, items.filter(pc.invert(pc.is_in(items["id"], already))), cfg.horizon_s)
        tickers = tables.get("item_tickers", arrow_rows.ITEM_TICKERS.empty_table())
        tickers = tickers.filter(pc.is_in(tickers["item_id"], items["id"]))
        landing.update(items=items, item_tickers=tickers, ticker_sentiment=arrow_rows.sentiment_table(
            affected_points(stored, _ticker_rows(items, tickers), cfg) if items.num_rows else []))
    return sink.write_tables(landing)


def _recount_novelty(stored: StoredItems, items: pa.Table, horizon_s: float) -> pa.Table:
    """``items`` with ``novelty_n`` counted over them and the stored copies, and relevance anew."""
    ids, keys = items["id"].to_pylist(), items["text_key"].to_pylist()
    times = [ts.timestamp() for ts in items["ts"].to_pylist()]
    copies = stored.copies(sorted(set(keys)))
    by_key: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        by_key.setdefault(key, []).append(row)
    novelty = [0] * len(ids)
    for key, rows in by_key.items():
        counts = novelty_counts([(times[row], ids[row]) for row in rows] + copies.get(key, []), horizon_s)
        for row, n in zip(rows, counts):
            novelty[row] = n
    cfg = RelevanceConfig()
    weights = [relevance(confidence, source, n, cfg) for confidence, source, n in
               zip(items["confidence"].to_pylist(), items["source"].to_pylist(), novelty)]
    for name, values in (("novelty_n", novelty), ("relevance", weights)):
        column = items.schema.get_field_index(name)
        items = items.set_column(column, items.schema.field(name), pa.array(values, items.schema.field(name).type))
    return items


def _ticker_rows(items: pa.Table, tickers: pa.Table) -> dict[str, list[ItemRow]]:
    """The aggregation's input rows of ``items``, per ticker of ``tickers``."""
    rows = {item_id: (item_id, ts.timestamp(), score, weight) for item_id, ts, score, weight in zip(
        *(items[name].to_pylist() for name in ("id", "ts", "score", "relevance")))}
    groups: dict[str, list[ItemRow]] = {}
    for item_id, ticker in zip(tickers["item_id"].to_pylist(), tickers["ticker"].to_pylist()):
        groups.setdefault(ticker, []).append(rows[item_id])
    return groups
