"""The one DuckDB writer: Arrow batches in, idempotent upserts (docs/data-model.md).

DuckDB allows one writing process per file, so every pipeline funnels its rows to a single
``DuckDBSink``. Items, item tickers and dead letters are ``ON CONFLICT DO NOTHING`` (a replay
changes nothing); sentiment points are ``ON CONFLICT DO UPDATE`` (a rerun writes the same value,
and the streaming job may overwrite a provisional point with its final value). Within one write,
the last version given of a point wins (``last_version_per_point``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from connectors.duckdb import arrow_rows
from connectors.duckdb.schema import create_schema
from pipeline.records import DeadLetter, Item

log = logging.getLogger(__name__)

SENTIMENT_KEY = ("ticker", "ts", "half_life_s")

# DISTINCT ON keeps an arbitrary row per key: ``write_tables`` passes one row per point already
# (the last version); it only matters for Parquet imports, whose points are written once each.
_INSERT = {
    "items": "INSERT INTO items SELECT DISTINCT ON (id) * FROM incoming ON CONFLICT DO NOTHING",
    "item_tickers": "INSERT INTO item_tickers SELECT DISTINCT * FROM incoming ON CONFLICT DO NOTHING",
    "dead_letters": "INSERT INTO dead_letters SELECT DISTINCT ON (id) * FROM incoming ON CONFLICT DO NOTHING",
    "ticker_sentiment": (
        "INSERT INTO ticker_sentiment SELECT DISTINCT ON (ticker, ts, half_life_s) * FROM incoming "
        "ON CONFLICT DO UPDATE SET sentiment = excluded.sentiment, n_items = excluded.n_items, "
        "ess = excluded.ess, mean_score = excluded.mean_score, top_items = excluded.top_items"
    ),
}


def memory_limit(text: str) -> str:
    """A DuckDB ``memory_limit`` (``512MB``, ``2GiB``, ``10%``), checked by DuckDB's own parser."""
    try:
        duckdb.connect(":memory:", config={"memory_limit": text}).close()
    except duckdb.Error as exc:
        raise ValueError(f"not a DuckDB memory limit: {text!r} (use e.g. 512MB, 2GiB)") from exc
    return text


def _connect_writer(db_path: str, config: dict[str, str], wait_s: float = 10.0) -> duckdb.DuckDBPyConnection:
    """Open the file for writing; a reader that holds it for one query is waited out, not fatal."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(db_path, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            log.info("waiting for a reader to release %s", db_path)
            time.sleep(0.2)


def last_version_per_point(table: pa.Table) -> pa.Table:
    """One row per (ticker, ts, half_life_s): the last one in the table, in table order.

    The streaming job emits a provisional version of a point, then the final one, and one write
    may hold both; without this, the insert kept an arbitrary version (often a stale one).
    """
    position = pa.array(range(table.num_rows), pa.int64())
    last = (table.select(list(SENTIMENT_KEY)).append_column("position", position)
            .group_by(list(SENTIMENT_KEY), use_threads=False).aggregate([("position", "max")]))
    positions = last["position_max"].combine_chunks()
    return table.take(positions.take(pc.sort_indices(positions)))  # kept rows, in table order


class DuckDBSink:
    """A plain writer the batch transform and the streaming job share.

    ``write`` is one transaction: when it returns, the rows are durable (the streaming job
    commits Kafka offsets only then). With ``snapshot_interval_s`` it also publishes a read-only
    snapshot for concurrent readers at most that often (connectors.duckdb.snapshot).
    ``memory_limit`` caps DuckDB's buffer cache, which otherwise may grow to 80% of RAM in a
    long-running job.
    """

    def __init__(self, db_path: str, snapshot_interval_s: float | None = None,
                 memory_limit: str | None = None) -> None:
        self.db_path = db_path
        self.con = _connect_writer(db_path, {"memory_limit": memory_limit} if memory_limit else {})
        create_schema(self.con)
        self.snapshot_interval_s = snapshot_interval_s
        self._last_snapshot = float("-inf")  # the first write publishes: readers never wait a whole interval
        self._unpublished = False  # a write committed since the last snapshot
        self._publish = _snapshot_publisher() if snapshot_interval_s else None

    def write(self, items: Sequence[Item] = (), dead_letters: Sequence[DeadLetter] = (),
              points: Sequence[object] = ()) -> dict[str, int]:
        """Insert everything in one transaction; returns the number of new rows per table."""
        now = datetime.now(timezone.utc)
        tables = {
            "items": arrow_rows.items_table(items, now) if items else None,
            "item_tickers": arrow_rows.item_tickers_table(items) if items else None,
            "dead_letters": arrow_rows.dead_letters_table(dead_letters, now) if dead_letters else None,
            "ticker_sentiment": arrow_rows.sentiment_table(points) if points else None,
        }
        return self.write_tables({name: table for name, table in tables.items() if table is not None})

    def write_tables(self, tables: dict[str, pa.Table]) -> dict[str, int]:
        """Insert Arrow tables shaped like ``arrow_rows.SCHEMAS`` (one transaction)."""
        written: dict[str, int] = {}
        self.con.execute("BEGIN TRANSACTION")
        try:
            for name, table in tables.items():
                if table.num_rows == 0:
                    continue
                if name == "ticker_sentiment":
                    table = last_version_per_point(table)
                self.con.register("incoming", table)
                try:
                    written[name] = self.con.execute(_INSERT[name]).fetchone()[0]
                finally:
                    self.con.unregister("incoming")
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self._unpublished = True
        self.maybe_publish_snapshot()
        return written

    def import_parquet(self, out_dir: str) -> dict[str, int]:
        """Load ``out_dir/<table>/*.parquet`` written by ``WriteParquetTables`` (idempotent)."""
        written: dict[str, int] = {}
        self.con.execute("BEGIN TRANSACTION")
        try:
            for name in arrow_rows.SCHEMAS:
                pattern = f"{out_dir.rstrip('/')}/{name}/*.parquet"
                if not self.con.execute("SELECT count(*) FROM glob(?)", [pattern]).fetchone()[0]:
                    continue
                quoted = pattern.replace("'", "''")  # a view cannot take parameters
                self.con.execute(f"CREATE OR REPLACE TEMP VIEW incoming AS SELECT * FROM read_parquet('{quoted}')")
                written[name] = self.con.execute(_INSERT[name]).fetchone()[0]
            self.con.execute("DROP VIEW IF EXISTS incoming")
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return written

    def maybe_publish_snapshot(self, force: bool = False) -> str | None:
        """Publish if a write is not in a snapshot yet and the last one is an interval old.

        A write inside the interval is published by the next call after it: the streaming job
        calls this every second too, so a burst followed by quiet is visible within the interval
        plus a second. Call it from the writing thread or under the writer's lock.
        """
        if self._publish is None:
            return None
        if not force and (not self._unpublished
                          or time.monotonic() - self._last_snapshot < self.snapshot_interval_s):
            return None
        self._last_snapshot = time.monotonic()
        self._unpublished = False
        return self._publish(self.con, self.db_path)

    def close(self) -> None:
        self.maybe_publish_snapshot(force=True)
        self.con.close()

    def __enter__(self) -> "DuckDBSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _snapshot_publisher():
    """``connectors.duckdb.snapshot.publish_snapshot`` if installed (the dashboard issue owns it)."""
    try:
        from connectors.duckdb.snapshot import publish_snapshot
    except ImportError:
        log.warning("snapshot publishing requested but connectors.duckdb.snapshot is not available")
        return None
    return publish_snapshot


class _WriteAll(beam.DoFn):
    """Receives every row on one key, so exactly one writer opens the file."""

    def __init__(self, db_path: str, batch_rows: int, snapshot_interval_s: float | None) -> None:
        self._db_path = db_path
        self._batch_rows = batch_rows
        self._snapshot_interval_s = snapshot_interval_s
        self._inserted = {name: Metrics.counter("duckdb", f"{name}_inserted") for name in arrow_rows.SCHEMAS}

    def process(self, keyed: tuple[None, Iterable[tuple[str, object]]]):
        pending: dict[str, list] = {"items": [], "dead_letters": [], "points": []}
        with DuckDBSink(self._db_path, self._snapshot_interval_s) as sink:
            for kind, record in keyed[1]:
                pending[kind].append(record)
                if len(pending[kind]) >= self._batch_rows:
                    self._flush(sink, pending)
            self._flush(sink, pending)
        yield self._db_path

    def _flush(self, sink: DuckDBSink, pending: dict[str, list]) -> None:
        written = sink.write(pending["items"], pending["dead_letters"], pending["points"])
        for name, count in written.items():
            self._inserted[name].inc(count)
        for rows in pending.values():
            rows.clear()


class WriteToDuckDB(beam.PTransform):
    """``{"items": ..., "dead_letters": ..., "points": ...} | WriteToDuckDB(path)``; any subset.

    Outputs the database path once everything is committed.
    """

    KINDS = ("items", "dead_letters", "points")

    def __init__(self, db_path: str, batch_rows: int = 50_000, snapshot_interval_s: float | None = None) -> None:
        super().__init__()
        self._db_path = db_path
        self._batch_rows = batch_rows
        self._snapshot_interval_s = snapshot_interval_s

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        unknown = set(inputs) - set(self.KINDS)
        if unknown:
            raise ValueError(f"WriteToDuckDB: unknown inputs {sorted(unknown)}; use {self.KINDS}")
        tagged = [
            pcoll | f"Tag {kind}" >> beam.Map(lambda record, kind=kind: (None, (kind, record)))
            for kind, pcoll in inputs.items()
        ]
        return (
            tagged
            | "Flatten" >> beam.Flatten()
            | "To one writer" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(_WriteAll(self._db_path, self._batch_rows, self._snapshot_interval_s))
        )
