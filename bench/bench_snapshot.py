"""Cost of publishing a read snapshot (connectors/duckdb/snapshot.py) as the database grows.

For each size: file size, CHECKPOINT + file copy + rename (what the writer pays every ~5 s),
the logical alternative (ATTACH + COPY FROM DATABASE) measured in the same run, and a reader's
open_for_read + one trend query on the snapshot.

    python bench/bench_snapshot.py [--sizes 10000 100000 1000000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402

from connectors.duckdb.schema import create_schema  # noqa: E402
from connectors.duckdb.snapshot import publish_snapshot  # noqa: E402

FILL = """
INSERT INTO items
SELECT 'id-' || i, TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i * 2), 'news',
       'headline number ' || i || ' about something that happened to a company today',
       NULL, NULL, 'en', md5(i::VARCHAR), 0, 'neutral', (i % 200) / 100.0 - 1, 0.1, 0.8, 0.1, 0.8, 0.0,
       'bench', now(), NULL, NULL, NULL
FROM range(?, ?) AS r(i);
---
INSERT INTO item_tickers SELECT 'id-' || i, 'T' || (i % 100), 'field' FROM range(?, ?) AS r(i);
"""


READ = """
import sys, time
from connectors.duckdb.snapshot import open_for_read
from dashboards.sql import install_trend_sql
runs = []
for _ in range(3):
    start = time.perf_counter()
    with open_for_read(sys.argv[1]) as reader:  # the writer holds the file: this reads the snapshot
        assert reader.is_snapshot
        install_trend_sql(reader.con)
        reader.con.execute(
            "SELECT * FROM trend('T7', TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(? * 2) - INTERVAL 1 DAY,"
            " TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(? * 2), 900, 7200)",
            [int(sys.argv[2]), int(sys.argv[2])]).fetchall()
    runs.append(time.perf_counter() - start)
print(sorted(runs)[1])
"""


def timed(fn, repeats: int = 3) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    db = str(workdir / "pulse.duckdb")
    con = duckdb.connect(db)
    create_schema(con)
    print(f"{'items':>9} {'file MB':>8} {'publish ms':>11} {'COPY FROM DATABASE ms':>22} {'ratio':>6} "
          f"{'read open+trend ms':>19}")
    filled = 0
    for size in sorted(args.sizes):
        for statement in FILL.split("---"):
            con.execute(statement, [filled, size])
        filled = size
        con.execute("CHECKPOINT")
        publish_s = timed(lambda: publish_snapshot(con, db))

        def logical_copy() -> None:
            target = str(workdir / "logical.duckdb")
            if os.path.exists(target):
                os.remove(target)
            con.execute(f"ATTACH '{target}' AS logical")
            con.execute("COPY FROM DATABASE pulse TO logical")
            con.execute("DETACH logical")

        logical_s = timed(logical_copy, repeats=1)

        reader = subprocess.run([sys.executable, "-c", READ, db, str(size)], capture_output=True, text=True,
                                check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        read_s = float(reader.stdout)
        mb = os.path.getsize(db) / 1e6
        print(f"{size:>9,} {mb:>8.1f} {publish_s * 1e3:>11.1f} {logical_s * 1e3:>22.1f} "
              f"{logical_s / publish_s:>6.1f} {read_s * 1e3:>19.1f}")
    con.close()


if __name__ == "__main__":
    main()
