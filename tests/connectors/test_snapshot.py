"""Reading a DuckDB file while another process streams into it: snapshots, never a lock error.

Run as a script, this file is the writer process of the streaming test:
``python test_snapshot.py DB SECONDS`` inserts items continuously and publishes snapshots.
"""
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

REPO_ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))

from connectors.duckdb import arrow_rows  # noqa: E402
from connectors.duckdb.schema import create_schema  # noqa: E402
from connectors.duckdb.sink import DuckDBSink  # noqa: E402
from connectors.duckdb.snapshot import (  # noqa: E402
    open_for_read,
    publish_snapshot,
    snapshot_path,
)

STREAM_SECONDS = float(os.environ.get("TICKERPULSE_TEST_STREAM_S", "20"))
MAX_DATA_AGE_S = 10.0


def item_batch(start: int, n: int) -> pa.Table:
    """``n`` scored items as the sink writes them (an Arrow batch), ids ``start..start+n-1``."""
    now = datetime.now(timezone.utc)
    ids = [f"item-{i}" for i in range(start, start + n)]
    given = {
        "id": ids,
        "ts": [now] * n,
        "source": ["news"] * n,
        "text": [f"headline {i}" for i in range(start, start + n)],
        "text_key": ids,
        "novelty_n": [0] * n,
        "label": ["neutral"] * n,
        "score": [0.0] * n,
        "prob_negative": [0.1] * n,
        "prob_neutral": [0.8] * n,
        "prob_positive": [0.1] * n,
        "confidence": [0.8] * n,
        "relevance": [0.0] * n,
        "model": ["test"] * n,
        "ingested_at": [now] * n,
    }
    unset = {field.name: [None] * n for field in arrow_rows.ITEMS if field.name not in given}
    return pa.Table.from_pydict(given | unset, schema=arrow_rows.ITEMS)


def insert_items(con: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    con.register("batch", batch)
    con.execute("INSERT INTO items BY NAME SELECT * FROM batch")
    con.unregister("batch")


def writer_main(db: str, seconds: float) -> None:
    """Stream for ``seconds`` through the sink: a batch every 50 ms, a snapshot at most every 5 s."""
    sink = DuckDBSink(db, snapshot_interval_s=5.0)
    written, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        sink.write_tables({"items": item_batch(written, 20)})
        written += 20
        if written == 20:
            print("ready", flush=True)  # the first write publishes a snapshot
        time.sleep(0.05)
    sink.close()
    print(f"written {written}", flush=True)


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "pulse.duckdb")


def start_process(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


HOLD_OPEN = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(60)"


def test_publish_snapshot_is_a_complete_readable_copy(db):
    con = duckdb.connect(db)
    create_schema(con)
    insert_items(con, item_batch(0, 100))
    path = publish_snapshot(con, db)
    insert_items(con, item_batch(100, 5))  # after the snapshot: not in it
    assert path == snapshot_path(db)
    assert not list(Path(db).parent.glob("*.tmp-*"))
    snap = duckdb.connect(path, read_only=True)
    assert snap.execute("SELECT count(*) FROM items").fetchone()[0] == 100
    assert abs(os.stat(path).st_mtime - time.time()) < 5


def test_a_vanished_file_fails_the_copy_with_cps_reason_and_leaves_nothing(db):
    """The streaming job once died with a CalledProcessError traceback from ``cp`` here."""
    con = duckdb.connect(db)
    create_schema(con)
    os.remove(db)
    with pytest.raises(OSError) as failure:
        publish_snapshot(con, db)
    assert type(failure.value) is OSError  # not subprocess.CalledProcessError
    message = str(failure.value)
    assert message.startswith(f"copying {db} to {snapshot_path(db)}.tmp-") and "No such file or directory" in message
    assert "\n" not in message
    assert not list(Path(db).parent.glob("*.tmp-*")) and not Path(snapshot_path(db)).exists()


def test_publishing_keeps_the_writers_lock(db):
    """An in-process copy would close a descriptor of the file and drop DuckDB's fcntl lock."""
    con = duckdb.connect(db)
    create_schema(con)
    publish_snapshot(con, db)
    probe = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1], read_only=True)", db],
        capture_output=True, text=True,
    )
    assert probe.returncode != 0 and "lock" in probe.stderr


def test_open_for_read_uses_the_live_file_when_no_writer_holds_it(db):
    con = duckdb.connect(db)
    create_schema(con)
    insert_items(con, item_batch(0, 7))
    publish_snapshot(con, db)
    insert_items(con, item_batch(7, 3))
    con.close()
    with open_for_read(db) as reader:
        assert not reader.is_snapshot and reader.age_s == 0.0
        assert reader.con.execute("SELECT count(*) FROM items").fetchone()[0] == 10


def test_open_for_read_reports_a_missing_database(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such database"):
        open_for_read(tmp_path / "absent.duckdb")


def test_locked_file_without_snapshot_is_a_clear_error(db):
    holder = start_process(HOLD_OPEN, db)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(duckdb.IOException, match="published no snapshot yet"):
            open_for_read(db)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_reads_during_a_stream_never_hit_a_lock_and_lag_at_most_10s(db):
    writer = subprocess.Popen(
        [sys.executable, __file__, db, str(STREAM_SECONDS)], cwd=REPO_ROOT,
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        snapshot_reads, worst_lag, last_count = 0, 0.0, 0
        while writer.poll() is None:
            with open_for_read(db) as reader:  # any exception here fails the test
                newest, count = reader.con.execute(
                    "SELECT max(ingested_at), count(*) FROM items").fetchone()
                if reader.is_snapshot:  # else the writer has just closed the file
                    lag = time.time() - newest.timestamp()
                    # the reported age errs on the old side (a snapshot renamed between stat and open)
                    assert reader.age_s <= MAX_DATA_AGE_S
                    worst_lag = max(worst_lag, lag)
                    snapshot_reads += 1
            assert count >= last_count  # snapshots only move forward
            last_count = count
            time.sleep(0.2)
        written = int(writer.stdout.read().split()[-1])
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == 0
    assert snapshot_reads >= STREAM_SECONDS * 2
    print(f"{snapshot_reads} snapshot reads, worst data age {worst_lag:.2f} s")  # docs/sql.md quotes it
    assert worst_lag <= MAX_DATA_AGE_S, f"data was {worst_lag:.1f}s old"
    with open_for_read(db) as reader:  # writer gone: the live file, complete
        assert not reader.is_snapshot
        assert reader.con.execute("SELECT count(*) FROM items").fetchone()[0] == written


if __name__ == "__main__":
    writer_main(sys.argv[1], float(sys.argv[2]))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_dead_publishers_are_removed_on_the_next_publish_or_open(db):
    """A kill mid-copy leaves <snapshot>.tmp-PID behind; the next publish or read removes it."""
    stale = Path(f"{snapshot_path(db)}.tmp-{_dead_pid()}")
    in_progress = Path(f"{snapshot_path(db)}.tmp-{os.getppid()}")  # a live process: maybe still copying
    for path in (stale, in_progress):
        path.write_bytes(b"half a copy")
    con = duckdb.connect(db)
    try:
        publish_snapshot(con, db)
    finally:
        con.close()
    assert not stale.exists() and in_progress.exists()
    stale.write_bytes(b"half a copy")
    open_for_read(db).close()
    assert not stale.exists() and in_progress.exists()
    in_progress.unlink()
