"""Dashboard callbacks on a million-item database (docs/performance.md, "Dashboard").

Builds a DuckDB file with the schema module and Arrow inserts (500 tickers by a Zipf law, 30
days, one item in ten naming two tickers), then times every callback of dashboards/app.py as
the browser calls it: a POST to /_dash-update-component on a running server (open_for_read,
queries, figure, JSON), median and worst of --repeats, twice: "cold", the file's mtime bumped
before each call (a new identity, as a new snapshot gives: the app's cache misses and re-reads
everything), and "warm", the file unchanged (repeated refreshes, served from the app's cache).
Baseline, same run: the previous dashboard's refresh queries (the trend, movers, shocks and why
macros over sentiment_series) on the same file.

    python bench/bench_dashboard.py [--items 1000000] [--db /tmp/bench-dashboard.duckdb] [--repeats 5]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import statistics
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from connectors.duckdb.schema import create_schema  # noqa: E402
from connectors.duckdb.snapshot import open_for_read  # noqa: E402
from dashboards.app import create_app  # noqa: E402
from dashboards.sql import install_trend_sql  # noqa: E402

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
                          "ticker": np.concatenate([tickers[picked], tickers[(picked[second] + 1) % n_tickers]]),
                          "link": np.full(n + int(second.sum()), "cashtag")})
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


def old_refresh(db: str, ticker: str) -> None:
    """The previous dashboard's refresh: 24 h window, 30-min buckets, 2 h half-life, one ticker."""
    with open_for_read(db) as reader:
        install_trend_sql(reader.con)
        con = reader.con
        con.execute("SELECT ticker, count(*) AS n FROM item_tickers GROUP BY ticker ORDER BY n DESC, ticker").fetchall()
        as_of = con.execute("SELECT max(ts) FROM items").fetchone()[0]
        since = as_of - timedelta(days=1)
        con.execute("SELECT * FROM trend(?, ?, ?, 1800, 7200)", [ticker, since, as_of]).fetchall()
        con.execute("SELECT * FROM why(?, ?, 7200, 10)", [ticker, as_of]).fetchall()
        con.execute("SELECT * FROM movers(?, 21600, 7200, 8)", [as_of]).fetchall()
        con.execute("SELECT * FROM shocks(?, ?, 1800, 7200, min_std := 0.02, min_items := 0, "
                    "min_baseline_items := 0) LIMIT 8", [since, as_of]).fetchall()


def serve(db: str) -> tuple[str, callable]:
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, create_app(db, refresh_s=3600).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/", server.shutdown


def request_body(callback: dict, values: list, state: list | None = None) -> bytes:
    """A callback request as Dash's renderer sends it."""
    outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in callback["output"].strip(".").split("...")]
    return json.dumps({
        "output": callback["output"], "outputs": outputs if callback["output"].startswith("..") else outputs[0],
        "inputs": [{**i, "value": v} for i, v in zip(callback["inputs"], values)],
        "state": [{**i, "value": v} for i, v in zip(callback["state"], state or [])],
        "changedPropIds": [f"{callback['inputs'][-1]['id']}.{callback['inputs'][-1]['property']}"]}).encode()


def timed(fn, repeats: int, before=None) -> tuple[float, float, float]:
    """Median and worst wall time of ``fn`` in ms, and its median CPU time in ms (this process, all
    threads: the server and DuckDB run here), after one warm-up call; ``before()`` runs untimed
    before each call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if before is not None:
            before()
        began, began_cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - began) * 1000)
        cpus.append((time.process_time() - began_cpu) * 1000)
    return statistics.median(walls), max(walls), statistics.median(cpus)


def touch(path: str) -> None:
    """A new mtime (1 ms later than the last): the file's identity changes, its contents do not."""
    mtime_ns = os.stat(path).st_mtime_ns + 1_000_000
    os.utime(path, ns=(mtime_ns, mtime_ns))


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url + "_dash-update-component", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return len(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--db", default="/tmp/bench-dashboard.duckdb")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not Path(args.db).exists():
        took = build(args.db, args.items, args.tickers, args.days)
        print(f"built {args.db}: {args.items:,} items in {took:.1f} s ({args.items / took:,.0f} rows/s)")
    with duckdb.connect(args.db, read_only=True) as con:
        n_items, n_links = con.execute("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM item_tickers)").fetchone()
        top, busiest = con.execute("SELECT ticker, count(*) FROM item_tickers GROUP BY 1 ORDER BY 2 DESC LIMIT 1").fetchone()
    print(f"{n_items:,} items, {n_links:,} ticker links; busiest ticker {top} ({busiest:,} items); "
          f"load average before: {open('/proc/loadavg').read().split()[0]}")
    base_median, base_worst, base_cpu = timed(lambda: old_refresh(args.db, top), args.repeats)
    url, stop = serve(args.db)
    try:
        deps = {d["output"].strip(".").split("...")[0].split("@")[0]: d
                for d in json.load(urllib.request.urlopen(url + "_dash-dependencies", timeout=30))}
        refresh = deps["ticker.options"]
        cases = [
            ("refresh: heat map, all tickers (default view)", refresh, [0, ""], None),
            ("refresh: heat map, 7 days, news, half-life 15 min", refresh, [0, "?window=7d&source=news&half_life=15m"], None),
            (f"refresh: one ticker ({top}), chart + why", refresh, [0, f"?ticker={top}"], None),
            ("refresh: compare 3 tickers, last 24 h", refresh,
             [0, f"?ticker={top}&ticker=T001&ticker=T250&window=24h"], None),
            ("refresh: unknown values from the URL", refresh, [0, "?window=zz&half_life=9&ticker=NOPE"], None),
            ("sync URL <-> controls", deps["url.search"], ["", [top], "6h", "1h", "news"], None),
            ("heat-map row click", deps["ticker.value"], [{"points": [{"y": top}]}], [""]),
            ("export CSV, heat map (all tickers)", deps["download.data"], [1], [""]),
            (f"export CSV, one ticker ({top})", deps["download.data"], [1], [f"?ticker={top}"]),
            ("dead-letter view (open)", deps["dead-letter-view.children"], [1, 0], None),
        ]
        print(f"\n{'':58s} {'cold: median / worst / CPU ms':>29s} {'warm: median / worst / CPU ms':>29s}")
        print(f"{'callback (HTTP POST /_dash-update-component)':58s} {'':29s} {'':29s} {'bytes':>9s}")
        print(f"{'baseline: previous refresh queries (one ticker, 24 h)':58s} "
              f"{base_median:9.0f} {base_worst:9.0f} {base_cpu:9.0f}")
        slowest = {"cold": 0.0, "warm": 0.0}
        for label, callback, values, state in cases:
            body = request_body(callback, values, state)
            size = post(url, body)
            figures = []
            for kind, before in (("cold", lambda: touch(args.db)), ("warm", None)):
                median, worst, cpu = timed(lambda: post(url, body), args.repeats, before)
                slowest[kind] = max(slowest[kind], median)
                figures.append(f"{median:9.0f} {worst:9.0f} {cpu:9.0f}")
            print(f"{label:58s} {figures[0]} {figures[1]} {size:9,d}")
        print(f"\nslowest callback median: cold {slowest['cold']:.0f} ms, warm {slowest['warm']:.0f} ms "
              f"(target <= 300 ms); baseline / slowest cold = {base_median / slowest['cold']:.1f}x; "
              f"load average after: {open('/proc/loadavg').read().split()[0]}")
    finally:
        stop()


if __name__ == "__main__":
    main()
