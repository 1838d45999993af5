"""Dashboard callbacks on a million-item database (docs/performance.md, "Dashboard").

Builds a DuckDB file with the schema module and Arrow inserts, then times each callback of
dashboards/app.py called directly (open_for_read + macros + queries + figure), and the same
views through HTTP against a running server.

    python bench/bench_dashboard.py [--items 1000000] [--db /tmp/bench-dashboard.duckdb]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from connectors.duckdb.schema import create_schema  # noqa: E402

START = datetime(2024, 3, 4, tzinfo=timezone.utc)
CHUNK = 200_000


def build(path: str, n_items: int, n_tickers: int, days: int, seed: int = 7) -> float:
    """A database of ``n_items`` over ``days``, tickers by a Zipf law; returns seconds taken."""
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    con = duckdb.connect(path)
    create_schema(con)
    tickers = np.array([f"T{n:03d}" for n in range(n_tickers)])
    popularity = 1.0 / np.arange(1, n_tickers + 1)
    popularity /= popularity.sum()
    span_us = days * 86400 * 10**6
    start_us = int(START.timestamp() * 10**6)
    for first in range(0, n_items, CHUNK):
        n = min(CHUNK, n_items - first)
        ids = np.char.add("i", np.arange(first, first + n).astype(str))
        ts_us = start_us + np.sort(rng.integers(first * span_us // n_items, (first + n) * span_us // n_items, n))
        score = np.clip(rng.normal(0.05, 0.5, n), -1, 1)
        label = np.where(score > 0.3, "positive", np.where(score < -0.3, "negative", "neutral"))
        confidence = 0.5 + 0.5 * np.abs(score)
        source = np.where(rng.random(n) < 0.6, "news", "comment")
        relevance = np.log(confidence) + np.where(source == "news", 0.0, -0.5)
        ts = pa.array(ts_us, pa.timestamp("us", tz="UTC"))
        items = pa.table({
            "id": ids, "ts": ts, "source": source, "text": np.char.add("headline ", ids), "url": pa.nulls(n, pa.string()),
            "author": pa.nulls(n, pa.string()), "lang": np.full(n, "en"),
            "text_key": [hashlib.blake2b(i.encode(), digest_size=8).hexdigest() for i in ids],
            "novelty_n": np.zeros(n, np.int32), "label": label, "score": score,
            "prob_negative": np.maximum(0, -score), "prob_neutral": 1 - np.abs(score),
            "prob_positive": np.maximum(0, score), "confidence": confidence, "relevance": relevance,
            "model": np.full(n, "bench"), "ingested_at": ts, "kafka_topic": pa.nulls(n, pa.string()),
            "kafka_partition": pa.nulls(n, pa.int32()), "kafka_offset": pa.nulls(n, pa.int64()),
        })
        picked = rng.choice(n_tickers, size=n, p=popularity)
        second = rng.random(n) < 0.1  # one item in ten names a second ticker
        links = pa.table({"item_id": np.concatenate([ids, ids[second]]),
                          "ticker": np.concatenate([tickers[picked], tickers[(picked[second] + 1) % n_tickers]])})
        con.register("incoming_items", items)
        con.register("incoming_links", links)
        con.execute("INSERT INTO items BY NAME SELECT * FROM incoming_items")
        con.execute("INSERT INTO item_tickers BY NAME SELECT * FROM incoming_links")
        con.unregister("incoming_items")
        con.unregister("incoming_links")
    con.execute("INSERT INTO dead_letters SELECT 'd' || i, ('{broken ' || i)::BLOB, 'broken JSON', 'parse',"
                " 'in.jsonl:' || i, NULL, NULL, NULL, ? FROM range(500) r(i)", [START + timedelta(days=days)])
    con.execute("CHECKPOINT")
    con.close()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--db", default="/tmp/bench-dashboard.duckdb")
    args = parser.parse_args()
    if not Path(args.db).exists():
        took = build(args.db, args.items, args.tickers, args.days)
        print(f"built {args.db}: {args.items:,} items in {took:.1f} s ({args.items / took:,.0f} rows/s)")


if __name__ == "__main__":
    main()
