"""Streaming benchmark: produce -> row in DuckDB latency at a fixed rate, and the top sustained rate.

    python bench/bench_stream.py                          # 50 msgs/s for 60 s, backlog of 8000
    python bench/bench_stream.py --rate 50 --duration 600 # the 10-minute memory check
    python bench/bench_stream.py --rate 50 --duration 600 --event-spacing 30  # ... with full horizons
    python bench/bench_stream.py --rate 50 --duration 1800 --event-spacing 30 --duckdb-memory-limit 256MB

One run: the job in this process, a real embedded broker, the bundled model, the bundled default settings:
1. scoring only: the engine alone on 4,096 distinct texts in the job's batches (256): the baseline items/s;
2. fixed rate: a producer process (bench/rate_producer.py) sends ``--rate`` records/s for
   ``--duration`` s while the job streams; latency per record = its row's ``ingested_at`` minus
   the producer's send time; p50/p99, and the job's process RSS at the start, each minute and
   the end (the producer's bookkeeping is not in it); and visibility to a reader: a process of
   its own (bench/reader_watch.py) opens the database as the dashboard does (``open_for_read``
   attached to one DuckDB instance: the snapshot while the job writes) every 200 ms, and a
   record's visibility latency is the first poll that sees it minus its send time (so up to one
   poll late), with the gaps between the snapshots it saw; a run past 5 minutes also prints
   both p99s per 5 minutes;
3. sustained rate: ``--backlog`` records are produced first, then the job catches up; its rate
   as a fraction of the scoring-only rate. Rows share their write's ``ingested_at``, so the rate
   is the rows of every write after the first over the time from the first write to the last:
   what the job did in that time (counting the first write's rows too overstated it by up to
   a write's share: 4/3 with 2,000 records in writes of 500).
Records' event times are ``--event-spacing`` seconds apart: at 1 s a 10-minute run spans 8 hours
of event time, far inside the 3-day horizon; at 30 s it fills the horizon after ~3 minutes and
the novelty tracker's two horizons after ~6, so the state's memory can be seen to level off.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from bench.rate_producer import record, text
from connectors.kafka.embedded import EmbeddedBroker, create_topics
from models.engine import SentimentEngine
from pipeline import stream
from pipeline.scoring import DEFAULT_BATCH_SIZE


def scoring_only(n: int = 4096, batch: int = DEFAULT_BATCH_SIZE) -> float:
    """The engine alone at the job's batch size, on texts it has not seen: the warm-up scores
    other texts, since the engine caches what it scored (a warm-up on the first timed batch
    made that batch free: +3% at 2,000 texts in batches of 64)."""
    engine = SentimentEngine.load(None, "auto")  # as the pipeline scores by default
    engine.predict([text(i) for i in range(2 * 10**6, 2 * 10**6 + batch)])  # warm-up
    texts = [text(i) for i in range(10**6, 10**6 + n)]
    started = time.perf_counter()
    for i in range(0, n, batch):
        engine.predict(texts[i:i + batch])
    return n / (time.perf_counter() - started)


def stream_args(bootstrap: str, db: str, group: str, until_idle: str, snapshot_interval: str,
                memory_limit: str | None) -> list[str]:
    return ["--bootstrap-servers", bootstrap, "--topics", "bench", "--group-id", group, "--db", db,
            "--until-idle", until_idle, "--metrics-interval", "10s", "--snapshot-interval", snapshot_interval,
            *(["--duckdb-memory-limit", memory_limit] if memory_limit else [])]


def fixed_rate(bootstrap: str, db: str, rate: float, duration: float, spacing_s: float,
               snapshot_interval: str, memory_limit: str | None) -> dict[str, object]:
    """Warm-up record first (start-up is not latency), then ``rate`` records/s for ``duration`` s."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    producer.send("bench", record(0, 0.0)).get(timeout=30)
    producer.close()
    seen_file, sent_file = db + ".seen.json", db + ".sent.json"
    here = Path(__file__).parent
    watcher = subprocess.Popen([sys.executable, str(here / "reader_watch.py"), db, seen_file])
    sender = subprocess.Popen([sys.executable, str(here / "rate_producer.py"), bootstrap, "bench", "bench-rate",
                               str(os.getpid()), sent_file, "--rate", str(rate), "--duration", str(duration),
                               "--event-spacing", str(spacing_s)])
    try:
        metrics = stream.run_stream(stream_args(bootstrap, db, "bench-rate", "15s", snapshot_interval, memory_limit))
        # The job stops 15 s after the last record, so the producer is done by then, unless it
        # never saw the warm-up record committed and so never started.
        status = sender.wait(timeout=60)
    except BaseException:
        sender.kill()
        watcher.kill()
        raise
    if status != 0:
        watcher.kill()
        raise SystemExit(f"the producer process failed with exit status {status}")
    watcher.terminate()
    watcher.wait(timeout=60)
    sent = json.loads(Path(sent_file).read_text())
    sent_at, rss = sent["sent_at"], sent["rss"]
    con = duckdb.connect(db, read_only=True)
    try:
        rows = dict(con.execute("SELECT id, epoch(ingested_at) FROM items").fetchall())
    finally:
        con.close()
    latencies = np.array([rows[i] - t for i, t in sent_at.items() if i in rows])
    if not latencies.size:
        raise SystemExit(f"none of the {len(sent_at)} records sent at the fixed rate was stored")
    watched = json.loads(Path(seen_file).read_text())
    seen_at, snapshot_gaps = watched["seen_at"], np.diff(watched["snapshots"])
    visible = np.array([seen_at[i] - t for i, t in sent_at.items() if i in seen_at])
    job_p50, job_p99 = metrics.latency_percentiles(0.5, 0.99)
    windows = by_window(sent_at, rows, seen_at, WINDOW_S)
    return {"sent": len(sent_at), "stored": len(latencies), "p50_s": float(np.percentile(latencies, 50)),
            "p99_s": float(np.percentile(latencies, 99)), "max_s": float(latencies.max()),
            "job_p50_s": job_p50, "job_p99_s": job_p99, "visible": int(visible.size),
            "visible_p50_s": percentile(visible, 50),
            "visible_p99_s": percentile(visible, 99), "rss_start_mib": rss["start"], "rss_end_mib": rss["end"],
            "rss_each_minute": rss["each_minute"], "windows": windows, "snapshots": len(watched["snapshots"]),
            "snapshot_gap_p50_s": percentile(snapshot_gaps, 50),
            "snapshot_gap_p99_s": percentile(snapshot_gaps, 99),
            "snapshot_gap_max_s": percentile(snapshot_gaps, 100)}


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (100: the max) of ``values``; NaN when there are none."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


WINDOW_S = 300.0  # a long run's latencies are also printed per 5 minutes of send time, to show a trend


def by_window(sent_at: dict[str, float], stored_at: dict[str, float], seen_at: dict[str, float],
              window_s: float) -> list[tuple[float, float, float]]:
    """(produce -> row p99, produce -> visible p99, visible max) in s, per ``window_s`` of send time."""
    first = min(sent_at.values())
    windows: dict[int, tuple[list[float], list[float]]] = {}
    for record_id, sent in sent_at.items():
        stored, visible = windows.setdefault(int((sent - first) // window_s), ([], []))
        if record_id in stored_at:
            stored.append(stored_at[record_id] - sent)
        if record_id in seen_at:
            visible.append(seen_at[record_id] - sent)
    return [(percentile(stored, 99),
             percentile(visible, 99),
             percentile(visible, 100)) for _, (stored, visible) in sorted(windows.items())]


def sustained(bootstrap: str, db: str, backlog: int, spacing_s: float, after: int, snapshot_interval: str,
              memory_limit: str | None) -> float:
    """The backlog's event times continue ``after`` the fixed-rate records' (none in the future)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for j in range(backlog):
        producer.send("bench-backlog", record(10**7 + j, (after + 1 + j) * spacing_s))
    producer.flush()
    producer.close()
    args = stream_args(bootstrap, db, "bench-backlog", "3s", snapshot_interval, memory_limit)
    args[args.index("bench")] = "bench-backlog"
    stream.run_stream(args)
    con = duckdb.connect(db, read_only=True)
    try:
        writes = con.execute("SELECT epoch(ingested_at) AS written, count(*) FROM items WHERE kafka_topic = 'bench-backlog' "
                             "GROUP BY written ORDER BY written").fetchall()
    finally:
        con.close()
    if len(writes) < 2:
        raise SystemExit(f"backlog of {backlog} too small to time: {len(writes)} write(s)")
    (first, _), (last, _) = writes[0], writes[-1]
    return sum(rows for _, rows in writes[1:]) / (last - first)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--backlog", type=int, default=8000)
    p.add_argument("--event-spacing", type=float, default=1.0, help="seconds of event time between records")
    p.add_argument("--snapshot-interval", default="1s", help="the job's --snapshot-interval (default: the job's, 1s)")
    p.add_argument("--duckdb-memory-limit", help="the job's --duckdb-memory-limit (default: DuckDB's, 80%% of RAM)")
    p.add_argument("--retention", type=float, default=120.0,
                   help="seconds the broker keeps a record (default 120; -1: forever). The embedded broker "
                        "rewrites all it keeps about once a second, so over a long run an unbounded topic "
                        "takes ever more of the cores the job runs on (docs/performance.md)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream.quiet_library_logs()

    baseline = scoring_only()
    print(f"scoring only (engine, batch {DEFAULT_BATCH_SIZE}, 4,096 distinct texts): {baseline:,.0f} items/s")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(data_dir=Path(tmp) / "kafka") as broker:
        create_topics(broker.bootstrap_servers, ["bench", "bench-backlog"],
                      retention_ms=int(args.retention * 1000) if args.retention >= 0 else -1)
        db = str(Path(tmp) / "bench.duckdb")
        latency = fixed_rate(broker.bootstrap_servers, db, args.rate, args.duration, args.event_spacing,
                             args.snapshot_interval, args.duckdb_memory_limit)
        print(f"fixed rate {args.rate:g} msgs/s for {args.duration:g} s, event times {args.event_spacing:g} s apart: "
              f"{latency['stored']}/{latency['sent']} stored; "
              f"produce -> row in DuckDB p50 {latency['p50_s'] * 1000:.0f} ms, p99 {latency['p99_s'] * 1000:.0f} ms, "
              f"max {latency['max_s'] * 1000:.0f} ms (job's own Kafka-timestamp -> commit: p50 "
              f"{latency['job_p50_s'] * 1000:.0f} ms, p99 {latency['job_p99_s'] * 1000:.0f} ms)")
        print(f"produce -> visible to a reader (snapshot interval {args.snapshot_interval}): "
              f"{latency['visible']}/{latency['sent']} seen; p50 {latency['visible_p50_s'] * 1000:.0f} ms, "
              f"p99 {latency['visible_p99_s'] * 1000:.0f} ms; {latency['snapshots']} snapshots seen, gap between "
              f"them p50 {latency['snapshot_gap_p50_s']:.2f} s, p99 {latency['snapshot_gap_p99_s']:.2f} s, "
              f"max {latency['snapshot_gap_max_s']:.2f} s")
        if len(latency["windows"]) > 1:
            print(f"per {WINDOW_S / 60:g} minutes, p99 of produce -> row / -> visible (max visible), s: " + ", ".join(
                f"{row:.2f}/{visible:.2f} ({worst:.2f})" for row, visible, worst in latency["windows"]))
        print(f"RSS at start {latency['rss_start_mib']:.0f} MiB, at end {latency['rss_end_mib']:.0f} MiB; "
              f"each minute: {', '.join(f'{m:.0f}' for m in latency['rss_each_minute'])} MiB")
        rate = sustained(broker.bootstrap_servers, db, args.backlog, args.event_spacing, latency["sent"],
                         args.snapshot_interval, args.duckdb_memory_limit)
        print(f"sustained (catch-up of {args.backlog} records): {rate:,.0f} items/s = "
              f"{rate / baseline:.2f} of scoring-only")


if __name__ == "__main__":
    main()
