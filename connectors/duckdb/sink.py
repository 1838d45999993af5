"""The one DuckDB writer: Arrow batches in, idempotent upserts (docs/data-model.md).

DuckDB allows one writing process per file, so every pipeline funnels its rows to a single
``DuckDBSink``. Items, item tickers and dead letters are ``ON CONFLICT DO NOTHING`` (a replay
changes nothing); sentiment points are ``ON CONFLICT DO UPDATE`` (a rerun writes the same value,
and the streaming job may overwrite a provisional point with its final value). Within one write,
the last version given of a point wins (``last_version_per_point``).

The sink also guards the file it writes (``StoreFault``): before each transaction commits and
before each snapshot it checks that the path still names the file it opened, and a failed write
(disk full, I/O error) stops it for good, so nothing downstream treats lost rows as durable.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NoReturn
from datetime import datetime, timezone

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from connectors.duckdb import arrow_rows
from connectors.duckdb.schema import TABLES, create_schema
from connectors.duckdb.snapshot import publish_snapshot
from connectors.records import DeadLetter, Item

log = logging.getLogger(__name__)

SENTIMENT_KEY = TABLES["ticker_sentiment"].key


class StoreFault(Exception):
    """The DuckDB file can no longer be trusted with writes: removed or replaced since the sink
    opened it, a write to it failed, or it is not a DuckDB file at all. ``str()`` is one line
    for the user."""


# What a failing disk or file raises: DuckDB's I/O errors, a commit it could not write (its WAL
# write failed) and fatal errors that invalidate the database; OSError from the snapshot copy.
_STORE_ERRORS = (duckdb.IOException, duckdb.TransactionException, duckdb.FatalException, OSError)


def _file_identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def memory_limit(text: str) -> str:
    """A DuckDB ``memory_limit`` (``512MB``, ``2GiB``, ``10%``), checked by DuckDB's own parser."""
    try:
        duckdb.connect(":memory:", config={"memory_limit": text}).close()
    except duckdb.Error as exc:
        raise ValueError(f"not a DuckDB memory limit: {text!r} (use e.g. 512MB, 2GiB)") from exc
    return text


def _connect_writer(db_path: str, config: dict[str, str], wait_s: float = 10.0) -> duckdb.DuckDBPyConnection:
    """Open the file for writing; a reader that holds it for one query is waited out, not fatal.
    A connection DuckDB opened in memory (``:memory:``, or a CSV/JSON/Parquet file given as the
    database) is refused with ``StoreFault``: nothing written to it would be kept."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con = duckdb.connect(db_path, config=config)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            log.info("waiting for a reader to release %s", db_path)
            time.sleep(0.2)
    if con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0] is None:
        con.close()
        raise StoreFault(f"{db_path} is not a DuckDB file: DuckDB opened it as an in-memory database")
    return con


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


SNAPSHOT_SHARE = 0.1  # the most of the writer's time that publishing snapshots may take
PUBLISH_HISTORY = 5  # the gap follows the median of this many latest publishes, not one slow copy
REOPEN_AFTER_S = 300.0  # how long a long-running writer keeps one connection (docs/performance.md)


class DuckDBSink:
    """A plain writer the batch transform and the streaming job share.

    ``write`` is one transaction: when it returns, the rows are durable (the streaming job
    commits Kafka offsets only then). With ``snapshot_interval_s`` it also publishes a read-only
    snapshot for concurrent readers at most that often (connectors.duckdb.snapshot), and never
    so often that publishing takes more than ``SNAPSHOT_SHARE`` of the time: the copy grows
    with the file (~550 ms at 150 MB), so a large file's snapshots space out instead of starving
    the writer. The share is reckoned on the median of the latest ``PUBLISH_HISTORY`` publishes,
    so one copy slowed by the disk does not leave readers without a snapshot for ten times as long.
    ``memory_limit`` caps DuckDB's buffer cache, which otherwise may grow to 80% of RAM in a
    long-running job. With ``reopen_after_s`` the connection is closed and reopened after a
    commit once it is that old: DuckDB 2.0's writer grows with the rows it has inserted, outside
    its buffer cache, and gives that memory back only when its database is closed.

    Its first ``StoreFault`` sticks: every later write or snapshot raises it again, and ``close``
    publishes nothing.
    """

    def __init__(self, db_path: str, snapshot_interval_s: float | None = None,
                 memory_limit: str | None = None, reopen_after_s: float | None = None) -> None:
        self.db_path = db_path
        self._config = {"memory_limit": memory_limit} if memory_limit else {}
        self.con = _connect_writer(db_path, self._config)
        self.reopen_after_s = reopen_after_s
        self._opened_at = time.monotonic()
        self._identity = _file_identity(db_path)  # (st_dev, st_ino) of the file this connection writes
        self.fault: StoreFault | None = None
        create_schema(self.con)
        self.snapshot_interval_s = snapshot_interval_s
        self._last_snapshot = float("-inf")  # the first write publishes: readers never wait a whole interval
        self.snapshot_gap_s = snapshot_interval_s  # from one snapshot's start to the next's: grows with the copy
        self._publish_s: deque[float] = deque(maxlen=PUBLISH_HISTORY)  # latest publishes' durations
        self._unpublished = False  # a write committed since the last snapshot

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

    def check_file(self) -> None:
        """Raise ``StoreFault`` if the path no longer names the file this sink opened (removed,
        or another file moved onto it): rows written now would land in a file nobody can open."""
        if self.fault is not None:
            raise self.fault
        try:
            identity = _file_identity(self.db_path)
        except FileNotFoundError:
            self._fail(f"{self.db_path} was removed while this job had it open")
        except OSError as exc:
            self._fail(f"cannot check {self.db_path}: {exc.strerror or exc}")
        if identity != self._identity:
            self._fail(f"{self.db_path} was replaced by another file while this job had it open")

    def _fail(self, message: str) -> NoReturn:
        self.fault = StoreFault(message)
        raise self.fault

    def write_tables(self, tables: dict[str, pa.Table]) -> dict[str, int]:
        """Insert Arrow tables shaped like ``arrow_rows.SCHEMAS`` (one transaction).

        The file is checked right before the commit; a fault rolls the transaction back."""
        self.check_file()
        written: dict[str, int] = {}
        try:
            self.con.execute("BEGIN TRANSACTION")
            try:
                for name, table in tables.items():
                    if table.num_rows == 0:
                        continue
                    if name == "ticker_sentiment":
                        table = last_version_per_point(table)
                    self.con.register("incoming", table)
                    written[name] = self.con.execute(TABLES[name].insert_sql()).fetchone()[0]
                    self.con.unregister("incoming")
                self.check_file()
                self.con.execute("COMMIT")
            except BaseException:
                _abort(self.con)
                raise
        except _STORE_ERRORS as exc:
            self._fail(f"writing {self.db_path} failed: {one_line(exc)}")
        self._unpublished = True
        self.maybe_publish_snapshot()
        self._maybe_reopen()
        return written

    def stored_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these item ids are already stored: one semi-join (14 ms for 500 ids over 1M
        rows, where 500 point lookups took 280 ms). Raises duckdb.Error if the read fails."""
        rows = self.con.execute("SELECT id FROM items WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)])
        return {row[0] for row in rows.fetchall()}

    def _maybe_reopen(self) -> None:
        """Close and reopen the connection once it is ``reopen_after_s`` old (between writes, all
        committed), with the session settings ``create_schema`` makes. The file must still be the
        one first opened; a process that takes the lock in the moment between is a fault (this
        job stops), as is any failure to reopen."""
        if self.reopen_after_s is None or time.monotonic() - self._opened_at < self.reopen_after_s:
            return
        self.con.close()
        try:
            self.con = _connect_writer(self.db_path, self._config)
        except duckdb.Error as exc:
            self.con = duckdb.connect(":memory:")  # close() needs a connection; nothing is written to it
            self._fail(f"reopening {self.db_path} failed: {one_line(exc)}")
        self._opened_at = time.monotonic()
        self.check_file()
        create_schema(self.con)

    def import_parquet(self, out_dir: str) -> dict[str, int]:
        """Load ``out_dir/<table>/*.parquet`` written by ``WriteParquetTables`` (idempotent), in
        one transaction. Raises ValueError when ``out_dir`` holds no such file, and DuckDB's
        error (nothing imported) when one is not Parquet or lacks a column."""
        written: dict[str, int] = {}
        self.con.execute("BEGIN TRANSACTION")
        try:
            for name, source in self._parquet_sources(out_dir).items():
                self.con.execute(f"CREATE OR REPLACE TEMP VIEW incoming AS SELECT * FROM {source}")
                written[name] = self.con.execute(TABLES[name].insert_sql()).fetchone()[0]
            self.con.execute("DROP VIEW IF EXISTS incoming")
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return written

    def read_parquet_tables(self, out_dir: str) -> dict[str, pa.Table]:
        """The tables of a ``WriteParquetTables`` directory as Arrow, with the columns of the
        DuckDB tables; raises as ``import_parquet`` does."""
        return {name: self.con.execute(f"SELECT {', '.join(TABLES[name].column_names)} FROM {source}").to_arrow_table()
                for name, source in self._parquet_sources(out_dir).items()}

    def _parquet_sources(self, out_dir: str) -> dict[str, str]:
        """``read_parquet(...)`` of each table with part files in ``out_dir``."""
        patterns = {name: f"{out_dir.rstrip('/')}/{name}/*.parquet" for name in arrow_rows.SCHEMAS}
        present = {name: pattern for name, pattern in patterns.items()
                   if self.con.execute("SELECT count(*) FROM glob(?)", [pattern]).fetchone()[0]}
        if not present:
            raise ValueError(f"{out_dir} holds no <table>/*.parquet files (a --parquet-out directory)")
        # a view cannot take parameters, so the pattern is quoted into the SQL
        return {name: "read_parquet('{}')".format(pattern.replace("'", "''")) for name, pattern in present.items()}

    def maybe_publish_snapshot(self, force: bool = False) -> str | None:
        """Publish if a write is not in a snapshot yet and the last one is ``snapshot_gap_s`` old:
        the interval, or the latest publishes' median duration / ``SNAPSHOT_SHARE`` when longer.

        A write inside the gap is published by the next call after it: the streaming job calls
        this every second too, so a burst followed by quiet is visible within the gap plus a
        second. Call it from the writing thread or under the writer's lock.
        """
        if not self.snapshot_interval_s:
            return None
        if not force and (not self._unpublished or time.monotonic() - self._last_snapshot < self.snapshot_gap_s):
            return None
        self.check_file()  # the copy reads the path: a replacement would be published as ours
        started = self._last_snapshot = time.monotonic()
        self._unpublished = False
        try:
            return publish_snapshot(self.con, self.db_path)
        except _STORE_ERRORS as exc:
            self.check_file()  # removed or replaced during the copy: that, not the copy, is the fault
            self._fail(f"publishing a snapshot of {self.db_path} failed: {one_line(exc)}")
        finally:
            self._publish_s.append(time.monotonic() - started)
            self.snapshot_gap_s = max(self.snapshot_interval_s, statistics.median(self._publish_s) / SNAPSHOT_SHARE)
            log.debug("published a snapshot of %s in %.0f ms; the next one in %.2f s or later",
                      self.db_path, self._publish_s[-1] * 1000, self.snapshot_gap_s)

    def close(self) -> None:
        """Publish a last snapshot (none after a fault) and close the file."""
        try:
            if self.fault is None:
                self.maybe_publish_snapshot(force=True)
        finally:
            self.con.close()

    def __enter__(self) -> "DuckDBSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _abort(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT has already ended it), then drop
    the registered rows (an aborted transaction refuses that); the error being raised wins."""
    for statement in (lambda: con.execute("ROLLBACK"), lambda: con.unregister("incoming")):
        try:
            statement()
        except duckdb.Error:
            pass


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (DuckDB's span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


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
