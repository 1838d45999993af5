"""How a DuckDB writer's RSS grows with the rows it writes, in the stream's write pattern.

Small transactions (25 rows, as a stream bundle writes them) into a 3-column table, duckdb alone
(no TickerPulse code), one fresh process per mode so that each RSS starts clean. Modes: no key
(the baseline); a primary key with plain inserts, with and without a ``CHECKPOINT`` after each
write (a snapshot a second); a primary key with ``ON CONFLICT DO NOTHING`` (how the sink inserts
every table), with and without the checkpoint; the same with a ``WHERE NOT EXISTS`` anti-join
instead; a primary key with the stored ids looked up first (``SELECT id … WHERE id IN``),
filtered out in Arrow, and the rest inserted plainly: a sink without ``ON CONFLICT``; and the
sink's mode under a 32 MB ``memory_limit``, and with the connection closed and reopened every
10,000 rows. Prints RSS every 30,000 rows and each mode's growth against the baseline's.

``python bench/bench_duckdb_rss.py [--rows 120000]``
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from typing import NamedTuple

PLAIN = "INSERT INTO t SELECT * FROM incoming"
ON_CONFLICT = PLAIN + " ON CONFLICT DO NOTHING"
LOOKUP = "SELECT id FROM t WHERE id IN (SELECT id FROM incoming)"


class Mode(NamedTuple):
    key: str  # the id column's constraint
    insert: str  # the statement that inserts
    checkpoint: bool = False  # CHECKPOINT after each write, as a snapshot a second does
    lookup: bool = False  # look the stored ids up first and insert only the rest
    memory_limit: str | None = None  # DuckDB's buffer cache cap
    reopen_every: int = 0  # close and reopen the connection every this many rows (0: never)


MODES = {
    "no key": Mode("", PLAIN),
    "primary key": Mode("PRIMARY KEY", PLAIN),
    "primary key, checkpoint": Mode("PRIMARY KEY", PLAIN, checkpoint=True),
    "primary key, ON CONFLICT": Mode("PRIMARY KEY", ON_CONFLICT),
    "primary key, ON CONFLICT, checkpoint": Mode("PRIMARY KEY", ON_CONFLICT, checkpoint=True),
    "primary key, anti-join, checkpoint": Mode(
        "PRIMARY KEY", PLAIN + " i WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.id = i.id)", checkpoint=True),
    "primary key, look up then plain INSERT, checkpoint": Mode("PRIMARY KEY", PLAIN, checkpoint=True, lookup=True),
    "primary key, ON CONFLICT, checkpoint, memory_limit 32MB": Mode(
        "PRIMARY KEY", ON_CONFLICT, checkpoint=True, memory_limit="32MB"),
    "primary key, ON CONFLICT, checkpoint, reopened every 10,000 rows": Mode(
        "PRIMARY KEY", ON_CONFLICT, checkpoint=True, reopen_every=10_000),
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

    key, insert, checkpoint, lookup, memory_limit, reopen_every = MODES[mode]
    config = {"memory_limit": memory_limit} if memory_limit else {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rss.duckdb")
        con = duckdb.connect(path, config=config)
        con.execute(f"CREATE TABLE t (id VARCHAR {key}, text VARCHAR, score DOUBLE)")
        for start in range(0, rows, BATCH):
            if reopen_every and start and start % reopen_every == 0:
                con.close()
                con = duckdb.connect(path, config=config)
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
