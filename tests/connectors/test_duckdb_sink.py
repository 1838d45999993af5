"""The DuckDB writer: Arrow inserts, idempotent replays, sentiment points overwritten in place."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from connectors.duckdb import arrow_rows
from connectors.duckdb import sink as sink_module
from connectors.duckdb.sink import SNAPSHOT_SHARE, DuckDBSink, StoreFault, memory_limit
from connectors.duckdb.schema import TABLES, create_schema
from connectors.duckdb.snapshot import publish_snapshot, snapshot_path
from connectors.records import DeadLetter, Item
from models.aggregation import SentimentPoint

TS = datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[2]


def scored(item_id: str, tickers=("AAPL",)) -> Item:
    return Item(id=item_id, ts=TS, source="news", text=f"text {item_id}", text_key="k", tickers=tickers,
                ticker_links=("field",) * len(tickers),
                label="positive", score=0.5, probs=(0.1, 0.3, 0.6), confidence=0.6, relevance=-0.5, model="m@1")


def point(sentiment: float) -> SentimentPoint:
    return SentimentPoint("AAPL", TS.timestamp(), 3600.0, sentiment, 2, 1.9, 0.4, (("a", 0.6), ("b", 0.4)))


def test_replays_change_nothing_and_points_are_upserted(tmp_path):
    db = str(tmp_path / "s.duckdb")
    dead = DeadLetter(raw=b"\xff", reason="not UTF-8", stage="parse", location="f:1")
    with DuckDBSink(db) as sink:
        first = sink.write([scored("a"), scored("b", ("AAPL", "MSFT")), scored("a")], [dead, dead], [point(0.1)])
        assert first == {"items": 2, "item_tickers": 3, "dead_letters": 1, "ticker_sentiment": 1}
        before = sink.con.execute("SELECT * FROM items ORDER BY id").fetchall()
        again = sink.write([scored("a"), scored("b", ("AAPL", "MSFT"))], [dead], [point(0.7)])
        assert again["items"] == 0 and again["item_tickers"] == 0 and again["dead_letters"] == 0
        assert sink.con.execute("SELECT * FROM items ORDER BY id").fetchall() == before  # ingested_at kept
    con = duckdb.connect(db, read_only=True)
    try:
        assert con.execute("SELECT sentiment, top_items FROM ticker_sentiment").fetchall() == [
            (0.7, [{"item_id": "a", "weight": 0.6}, {"item_id": "b", "weight": 0.4}])]
        assert con.execute("SELECT raw, source_location FROM dead_letters").fetchall() == [(b"\xff", "f:1")]
    finally:
        con.close()


def test_a_failed_write_rolls_back_everything(tmp_path):
    good_dead = arrow_rows.dead_letters_table([DeadLetter(raw=b"x", reason="r", stage="parse", location="f:2")])
    row = arrow_rows.item_row(scored("u"), TS)
    row["label"] = None  # violates NOT NULL after the dead letter was inserted in the same transaction
    bad_items = pa.Table.from_pylist([row], schema=arrow_rows.ITEMS)
    with DuckDBSink(str(tmp_path / "s.duckdb")) as sink:
        with pytest.raises(duckdb.Error):
            sink.write_tables({"dead_letters": good_dead, "items": bad_items})
        assert sink.con.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0


def test_snapshots_space_out_when_publishing_would_take_more_than_its_share(tmp_path, monkeypatch):
    """A publish that takes 0.2 s holds the next one back 2 s (SNAPSHOT_SHARE 0.1), though the
    interval is 0.05 s; the real publish runs behind the delay."""
    db = str(tmp_path / "s.duckdb")
    published = []

    def slow_publish(con, path):
        time.sleep(0.2)
        published.append(path)
        return publish_snapshot(con, path)

    monkeypatch.setattr(sink_module, "publish_snapshot", slow_publish)
    with DuckDBSink(db, snapshot_interval_s=0.05) as sink:
        sink.write([scored("a")])  # the first write publishes at once
        assert published == [db] and sink.snapshot_gap_s >= 0.2 / SNAPSHOT_SHARE
        time.sleep(0.1)
        sink.write([scored("b")])  # due by the interval, held back by the share
        assert published == [db]
        time.sleep(sink.snapshot_gap_s - 0.1)
        assert sink.maybe_publish_snapshot() == snapshot_path(db) and published == [db, db]


def test_one_slow_publish_among_fast_ones_does_not_space_snapshots_out(tmp_path, monkeypatch):
    """The gap follows the median of the latest publishes: one copy slowed by the disk (0.3 s,
    which alone would hold the next snapshot back 3 s) among fast ones leaves it near the interval;
    once most of the latest publishes are that slow, it spaces out."""
    db = str(tmp_path / "s.duckdb")
    delays = iter([0.0, 0.0, 0.3, 0.3, 0.3])

    def publish_after_delay(con, path):
        time.sleep(next(delays))
        return publish_snapshot(con, path)

    monkeypatch.setattr(sink_module, "publish_snapshot", publish_after_delay)
    with DuckDBSink(db, snapshot_interval_s=0.05) as sink:
        sink.write([scored("a")])  # the first write publishes at once
        gaps = [sink.snapshot_gap_s]
        for _ in range(4):
            sink.maybe_publish_snapshot(force=True)
            gaps.append(sink.snapshot_gap_s)
        monkeypatch.setattr(sink_module, "publish_snapshot", publish_snapshot)  # for close()'s last one
    one_slow, mostly_slow = gaps[2], gaps[4]
    assert one_slow < 0.3 / SNAPSHOT_SHARE / 2, gaps
    assert mostly_slow >= 0.3 / SNAPSHOT_SHARE, gaps


def test_snapshots_are_published_for_concurrent_readers(tmp_path):

    db = str(tmp_path / "s.duckdb")
    with DuckDBSink(db, snapshot_interval_s=3600) as sink:
        sink.write([scored("a")])
        assert sink.maybe_publish_snapshot(force=True) == snapshot_path(db)
        sink.write([scored("b")])  # inside the interval: no new snapshot yet
        reader = duckdb.connect(snapshot_path(db), read_only=True)  # while the writer holds the file
        try:
            assert reader.execute("SELECT id FROM items").fetchall() == [("a",)]
        finally:
            reader.close()
    reader = duckdb.connect(snapshot_path(db), read_only=True)  # close() publishes the final state
    try:
        assert reader.execute("SELECT count(*) FROM items").fetchone()[0] == 2
    finally:
        reader.close()


def test_memory_limit_caps_the_writer_and_bad_values_are_refused(tmp_path):
    with DuckDBSink(str(tmp_path / "t.duckdb"), memory_limit="256MiB") as sink:
        assert sink.con.execute("SELECT current_setting('memory_limit')").fetchone() == ("256.0 MiB",)
    assert memory_limit("10%") == "10%"
    with pytest.raises(ValueError, match="not a DuckDB memory limit: 'lots'"):
        memory_limit("lots")


def test_a_version_1_file_gains_the_link_column(tmp_path):
    db = str(tmp_path / "v1.duckdb")
    with duckdb.connect(db) as con:  # item_tickers as schema version 1 wrote it
        con.execute("CREATE TABLE item_tickers (item_id VARCHAR NOT NULL, ticker VARCHAR NOT NULL, "
                    "PRIMARY KEY (item_id, ticker))")
        con.execute("INSERT INTO item_tickers VALUES ('old', 'AAPL')")
        con.execute("CREATE TABLE schema_info (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("INSERT INTO schema_info VALUES ('schema_version', '1')")
    with DuckDBSink(db) as sink:
        sink.write([scored("new", ("MSFT",))])
        assert sink.con.execute("SELECT * FROM item_tickers ORDER BY item_id").fetchall() == [
            ("new", "MSFT", "field"), ("old", "AAPL", "unrecorded")]
        assert sink.con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchone() == ("2",)


def test_the_last_version_of_a_point_in_one_write_wins(tmp_path):
    """Many items of one ticker in one 5-minute step: the stream emits a provisional version of
    the step's point per item, and one write holds them all; the stored point is the last one."""
    from models.aggregation import AggregationConfig, TickerState

    cfg = AggregationConfig(half_lives_s=(600.0, 3600.0), cadence_s=300.0, top_k=3)
    state, versions = TickerState("AAPL", cfg), []
    for i in range(200):  # 10 steps of 20 items each
        versions += state.add(f"i{i:03d}", TS.timestamp() + i * 15.0, (i % 7) / 3.5 - 1, -(i % 5) / 4)
    last = {(p.ticker, p.ts_s, p.half_life_s): p for p in versions}
    assert len(versions) > 10 * len(last)  # many stale versions precede each final one
    with DuckDBSink(str(tmp_path / "s.duckdb")) as sink:
        assert sink.write(points=versions)["ticker_sentiment"] == len(last)
        stored = sink.con.execute(
            "SELECT ticker, epoch(ts), half_life_s, sentiment, n_items FROM ticker_sentiment").fetchall()
    assert len(stored) == len(last)
    for ticker, ts_s, half_life_s, sentiment, n_items in stored:
        final = last[(ticker, ts_s, half_life_s)]
        assert (sentiment, n_items) == (final.sentiment, final.n_items)


def test_a_removed_file_is_a_fault_and_nothing_more_is_written(tmp_path):
    """DuckDB keeps writing an unlinked file through its descriptor: rows nobody can ever open."""
    db = tmp_path / "s.duckdb"
    keep = tmp_path / "kept.duckdb"
    sink = DuckDBSink(str(db))
    sink.write([scored("a")])
    os.link(db, keep)  # the inode stays readable, so the test can see what reached it
    db.unlink()
    with pytest.raises(StoreFault, match="was removed while this job had it open"):
        sink.write([scored("b")])
    with pytest.raises(StoreFault):  # the fault sticks: a file that came back is not trusted
        sink.write([scored("c")])
    sink.close()
    assert not db.exists()
    con = duckdb.connect(str(keep), read_only=True)
    try:
        assert con.execute("SELECT id FROM items").fetchall() == [("a",)]  # b was rolled back
    finally:
        con.close()


def test_a_file_removed_during_the_snapshot_copy_is_reported_as_removed(tmp_path, monkeypatch):
    """The check before the copy can pass and the file vanish before ``cp`` reads it: the fault
    to report is the removal, not the copy's "cannot stat"."""
    db = tmp_path / "s.duckdb"
    sink = DuckDBSink(str(db), snapshot_interval_s=3600)
    sink.write([scored("a")])

    def copy_after_removal(con, db_path):
        db.unlink()
        return publish_snapshot(con, db_path)

    monkeypatch.setattr(sink_module, "publish_snapshot", copy_after_removal)
    sink.write([scored("b")])
    with pytest.raises(StoreFault, match="was removed while this job had it open"):
        sink.maybe_publish_snapshot(force=True)
    sink.close()


def test_a_replaced_file_is_a_fault_and_is_neither_written_nor_published(tmp_path):
    db, other = tmp_path / "s.duckdb", tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    sink = DuckDBSink(str(db), snapshot_interval_s=3600)
    sink.write([scored("a")])
    published = os.stat(snapshot_path(db)).st_mtime_ns
    os.replace(other, db)
    with pytest.raises(StoreFault, match="was replaced by another file"):
        sink.write([scored("b")])
    with pytest.raises(StoreFault):
        sink.maybe_publish_snapshot(force=True)
    sink.close()  # no last snapshot of the replacement either
    assert os.stat(snapshot_path(db)).st_mtime_ns == published
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0  # untouched
    finally:
        con.close()


HOLD_FOR_WRITING = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                    "time.sleep(float(sys.argv[2]))")


@pytest.fixture
def local_time_not_utc(monkeypatch):
    """DuckDB's session time zone defaults to the process's: here not UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_writer_reopened_after_its_age_keeps_its_rows_settings_and_the_lock(tmp_path, local_time_not_utc):
    db = str(tmp_path / "s.duckdb")
    sink = DuckDBSink(db, reopen_after_s=0)  # reopens after every write
    first = sink.con
    sink.write([scored("a")])
    sink.write([scored("b")])
    assert sink.con is not first and sink.stored_ids(["a", "b", "c"]) == {"a", "b"}
    assert sink.con.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"
    other = subprocess.run([sys.executable, "-c", HOLD_FOR_WRITING, db, "0"], capture_output=True, text=True,
                           timeout=60)
    assert other.returncode != 0 and "lock" in other.stderr.lower()  # the reopened connection holds it
    sink.close()
    con = duckdb.connect(db, read_only=True)
    try:
        assert con.execute("SELECT id FROM items ORDER BY id").fetchall() == [("a",), ("b",)]
    finally:
        con.close()


def test_a_process_that_takes_the_file_while_the_writer_reopens_is_a_fault(tmp_path, monkeypatch):
    """Another writer that gets the lock in the moment between close and reopen: this sink stops
    with one line; the write it had committed is durable."""
    db = str(tmp_path / "s.duckdb")
    connect = sink_module._connect_writer
    holders = []

    def another_process_first(path, config, wait_s=10.0):
        holders.append(subprocess.Popen([sys.executable, "-c", HOLD_FOR_WRITING, path, "30"],
                                        stdout=subprocess.PIPE, text=True))
        assert holders[-1].stdout.readline().strip() == "held"
        return connect(path, config, wait_s=0.5)

    sink = DuckDBSink(db, reopen_after_s=0)
    monkeypatch.setattr(sink_module, "_connect_writer", another_process_first)
    try:
        with pytest.raises(StoreFault, match=r"^reopening .* failed: .*[Ll]ock") as fault:
            sink.write([scored("a")])
        assert "\n" not in str(fault.value)
        with pytest.raises(StoreFault):  # the fault sticks
            sink.write([scored("b")])
        sink.close()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    con = duckdb.connect(db, read_only=True)
    try:
        assert con.execute("SELECT id FROM items").fetchall() == [("a",)]
    finally:
        con.close()


def test_a_failing_write_is_a_fault_in_one_line(tmp_path):
    """A real write error: the job's file-size limit (RLIMIT_FSIZE) makes DuckDB's WAL write fail,
    as a full disk would."""
    db = tmp_path / "s.duckdb"
    code = ("import resource, signal, sys; from connectors.duckdb.sink import DuckDBSink, StoreFault\n"
            "from tests.connectors.test_duckdb_sink import scored\n"
            "sink = DuckDBSink(sys.argv[1])\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
            "try:\n"
            "    for n in range(2000): sink.write([scored(f'{n}-{i}') for i in range(50)])\n"
            "except StoreFault as exc: print(exc)\n"
            "try: sink.write([scored('after')])\n"
            "except StoreFault as exc: print('again:', exc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(db)], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 0, out.stderr
    first, again = out.stdout.strip().splitlines()
    assert first.startswith(f"writing {db} failed: ") and "File too large" in first
    assert again == f"again: {first}"


@pytest.mark.parametrize("name", list(TABLES))
def test_each_declared_type_means_the_same_in_duckdb_and_arrow(name):
    """The DDL and the Arrow schema derive from one declaration; this checks that each declared
    pair (DuckDB type, Arrow type) is one type: DuckDB reads the Arrow schema as the table's own."""
    con = duckdb.connect()
    create_schema(con)
    con.register("incoming", arrow_rows.SCHEMAS[name].empty_table())
    con.execute("CREATE TABLE probe AS SELECT * FROM incoming")
    types_sql = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position"
    assert con.execute(types_sql, ["probe"]).fetchall() == con.execute(types_sql, [name]).fetchall()
    assert con.execute(TABLES[name].insert_sql()).fetchone() == (0,)


def test_inserts_name_their_columns_so_a_table_in_another_column_order_still_loads(tmp_path):
    """A file whose table has the declared columns in another order (as ALTER TABLE ... ADD
    COLUMN leaves an upgraded one) takes the same rows: the insert lists columns by name."""
    db = str(tmp_path / "s.duckdb")
    con = duckdb.connect(db)
    con.execute("CREATE TABLE item_tickers (link VARCHAR NOT NULL, ticker VARCHAR NOT NULL, "
                "item_id VARCHAR NOT NULL, PRIMARY KEY (item_id, ticker))")
    con.close()
    with DuckDBSink(db) as sink:
        sink.write([scored("a", ("AAPL", "MSFT"))])
        assert sink.con.execute("SELECT item_id, ticker, link FROM item_tickers ORDER BY ticker").fetchall() == [
            ("a", "AAPL", "field"), ("a", "MSFT", "field")]


def test_a_file_duckdb_opens_in_memory_is_refused(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(StoreFault, match="not a DuckDB file"):
        DuckDBSink(str(path))
    with pytest.raises(StoreFault, match="in-memory"):
        DuckDBSink(":memory:")
    assert path.read_text() == "a,b\n1,2\n"
