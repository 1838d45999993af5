"""When does each streamed item become visible to a reader? bench_stream's watcher process.

    python bench/reader_watch.py DB OUT.json [--poll 0.2] [--topic bench]

Opens DB as the dashboard does (``open_for_read`` attached to one long-lived DuckDB instance:
the snapshot while a job writes) every ``--poll`` seconds and, on SIGTERM, writes ``{"seen_at": {item id: first time seen},
"snapshots": [each snapshot's publish time, as readers are told it]}`` to OUT. A process of its own, as readers are, and with no imports
beyond DuckDB: DuckDB refuses a read-only connection to a file that a connection of the same
process has open for writing. Attaching costs ~9 ms of CPU per poll on a 37 MB snapshot, a new
instance per poll ~49 ms (docs/performance.md), which on 2 cores is taken from the job measured.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.duckdb.snapshot import open_for_read  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("db")
    p.add_argument("out")
    p.add_argument("--poll", type=float, default=0.2)
    p.add_argument("--topic", default="bench")
    args = p.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    seen_at: dict[str, float] = {}
    snapshots: list[float] = []
    newest = -1
    instance = duckdb.connect()  # in memory; each poll attaches the file to it, as the dashboard does
    while not stop.is_set():
        try:
            with open_for_read(args.db, attach_to=instance) as reader:
                if reader.published_at is not None and (not snapshots or reader.published_at > snapshots[-1]):
                    snapshots.append(reader.published_at)
                rows = reader.con.execute("SELECT id, kafka_offset FROM items WHERE kafka_topic = ? "
                                          "AND kafka_offset > ?", [args.topic, newest]).fetchall()
        except Exception:  # noqa: BLE001 - no file or snapshot yet: nothing is visible
            rows = []
        now = time.time()
        for item_id, offset in rows:
            seen_at.setdefault(item_id, now)
            newest = max(newest, offset)
        stop.wait(args.poll)
    Path(args.out).write_text(json.dumps({"seen_at": seen_at, "snapshots": snapshots}))


if __name__ == "__main__":
    main()
