"""How a DuckDB writer's RSS grows with the rows it writes, in the stream's write pattern.

Small transactions (25 rows, as a stream bundle writes them) into a 3-column table, duckdb alone
(no TickerPulse code), one fresh process per mode so that each RSS starts clean. Modes: no key
(the baseline); a primary key with plain inserts, with and without a ``CHECKPOINT`` after each
write (a snapshot a second); a primary key with ``ON CONFLICT DO NOTHING`` (how the sink inserts
every table), with and without the checkpoint; the same with a ``WHERE NOT EXISTS`` anti-join
instead; and a primary key with the stored ids looked up first (``SELECT id … WHERE id IN``),
filtered out in Arrow, and the rest inserted plainly: a sink without ``ON CONFLICT``. Prints RSS
every 30,000 rows and each mode's growth against the baseline's.

``python bench/bench_duckdb_rss.py [--rows 120000]``
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

PLAIN = "INSERT INTO t SELECT * FROM incoming"
LOOKUP = "SELECT id FROM t WHERE id IN (SELECT id FROM incoming)"
# name: (key, the statement that inserts, CHECKPOINT after each write, look the stored ids up first)
MODES = {
    "no key": ("", PLAIN, False, False),
    "primary key": ("PRIMARY KEY", PLAIN, False, False),
    "primary key, checkpoint": ("PRIMARY KEY", PLAIN, True, False),
    "primary key, ON CONFLICT": ("PRIMARY KEY", PLAIN + " ON CONFLICT DO NOTHING", False, False),
    "primary key, ON CONFLICT, checkpoint": ("PRIMARY KEY", PLAIN + " ON CONFLICT DO NOTHING", True, False),
    "primary key, anti-join, checkpoint": (
        "PRIMARY KEY", PLAIN + " i WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.id = i.id)", True, False),
    "primary key, look up then plain INSERT, checkpoint": ("PRIMARY KEY", PLAIN, True, True),
}
BATCH = 25


def rss_mib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))


def write_rows(mode: str, rows: int) -> None:
    """The child: write ``rows`` rows in the mode's way, printing ``rows rss`` lines."""
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    key, insert, checkpoint, lookup = MODES[mode]
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(os.path.join(tmp, "rss.duckdb"))
        con.execute(f"CREATE TABLE t (id VARCHAR {key}, text VARCHAR, score DOUBLE)")
        for start in range(0, rows, BATCH):
            ids = range(start, start + BATCH)
            incoming = pa.table({
                "id": [f"item-{i}" for i in ids],
                "text": [f"$ACME item {i} beats estimates and raises its full-year guidance" for i in ids],
                "score": [0.5] * BATCH})
            con.register("incoming", incoming)
            con.execute("BEGIN")
            if lookup:
                stored = pa.array([row[0] for row in con.execute(LOOKUP).fetchall()], pa.string())
                con.unregister("incoming")
                con.register("incoming", incoming.filter(pc.invert(pc.is_in(incoming["id"], stored))))
            con.execute(insert)
            con.execute("COMMIT")
            con.unregister("incoming")
            if checkpoint:
                con.execute("CHECKPOINT")
            written = start + BATCH
            if written == BATCH or written % 30_000 == 0:
                print(written, rss_mib(), flush=True)
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        write_rows(args.child, args.rows)
        return
    growth = {}
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--child", mode],
                             check=True, capture_output=True, text=True).stdout.split("\n")
        readings = [tuple(map(int, line.split())) for line in out if line]
        growth[mode] = readings[-1][1] - readings[0][1]
        print(f"{mode}: RSS " + ", ".join(f"{rss} MiB at {n:,}" for n, rss in readings), flush=True)
    base = max(growth["no key"], 1)
    for mode, mib in growth.items():
        print(f"{mode}: +{mib} MiB over {args.rows:,} rows = {mib / base:.1f}x the no-key baseline")


if __name__ == "__main__":
    main()
