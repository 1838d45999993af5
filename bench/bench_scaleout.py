"""Scale-out benchmark: two scoring workers + the store against one single-process stream.

    python bench/bench_scaleout.py                  # 4,000 records on 4 partitions
    python bench/bench_scaleout.py --records 8000 --workers 2

One run, one embedded broker, the same corpus, each job a separate process as deployed
(`run_pipeline.py stream`, bundled model, default settings):
1. the single-process stream catches up the backlog;
2. ``--workers`` scoring workers and one store catch up the same backlog (its own topics and groups).
Every job polls ``--max-poll-records`` (100) records per partition per bundle, so that rows are
written in many transactions. Rate = items written after the first write / (last write's
``ingested_at`` - first write's), so process start-up (imports, model load) is not counted; the
scale-out's rate is what reaches DuckDB through the store. Per worker: its published messages
after its first publish / (its last message's broker timestamp - its first). torch takes every
core in every process unless ``--worker-threads`` sets the workers' (OMP_NUM_THREADS).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout, installed or not
from bench.rate_producer import record  # noqa: E402  (the stream benches' corpus)
from connectors.kafka.embedded import EmbeddedBroker, create_topics  # noqa: E402
from connectors.kafka.offsets import committed_offsets  # noqa: E402

PARTITIONS = 4


def job(args: list[str], log: Path, threads: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "stream", *args],
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def committed(bootstrap: str, group: str, topic: str) -> int:
    return sum(v or 0 for v in committed_offsets(bootstrap, group, [(topic, p) for p in range(PARTITIONS)]).values())


def wait_for(condition, procs: list[subprocess.Popen], timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit("a job exited or the run timed out; see the logs")
        time.sleep(0.5)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=120)


def rate(db: Path) -> tuple[int, float]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        n, after_first, first, last = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE ingested_at > (SELECT min(ingested_at) FROM items)), "
            "epoch(min(ingested_at)), epoch(max(ingested_at)) FROM items").fetchone()
    finally:
        con.close()
    return n, after_first / (last - first)


def per_worker_rates(bootstrap: str, workers: int) -> list[tuple[int, float]]:
    """Each worker's published messages per second of broker time, from the scored topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
    tps = [TopicPartition("scored", p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    times: dict[int, list[float]] = {w: [] for w in range(workers)}
    for message in consumer:
        origin = json.loads(message.value)["kafka_partition"]
        times[origin % workers].append(message.timestamp / 1000)
    consumer.close()
    return [(len(t), sum(1 for x in t if x > min(t)) / (max(t) - min(t))) for t in times.values()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=4000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-poll-records", default="100")
    p.add_argument("--worker-threads", type=int, help="torch threads per scoring worker (default: torch's, all cores)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    with EmbeddedBroker(data_dir=tmp / "kafka") as broker:
        bootstrap = broker.bootstrap_servers
        for topic in ("bench", "scored", "points"):
            create_topics(bootstrap, [topic], partitions=PARTITIONS)
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for i in range(args.records):
            producer.send("bench", record(i, i * 20.0), partition=i % PARTITIONS)
        producer.flush()
        producer.close()
        common = ["--bootstrap-servers", bootstrap, "--metrics-interval", "10s",
                  "--max-poll-records", args.max_poll_records]

        single = job([*common, "--topics", "bench", "--group-id", "single", "--db", str(tmp / "single.duckdb")],
                     tmp / "single.log")
        wait_for(lambda: committed(bootstrap, "single", "bench") >= args.records, [single])
        stop([single])
        n_single, single_rate = rate(tmp / "single.duckdb")

        store = job([*common, "--role", "store", "--topics", "scored", "--points-topic", "points",
                     "--group-id", "store", "--db", str(tmp / "store.duckdb")], tmp / "store.log")
        workers = [job([*common, "--role", "score", "--topics", "bench", "--scored-topic", "scored",
                        "--group-id", "workers", "--worker-index", str(i), "--workers", str(args.workers)],
                       tmp / f"worker{i}.log", args.worker_threads) for i in range(args.workers)]
        wait_for(lambda: committed(bootstrap, "workers", "bench") >= args.records, [store, *workers])
        wait_for(lambda: committed(bootstrap, "store", "scored") >= args.records, [store, *workers])
        stop([*workers, store])
        n_scaled, scaled_rate = rate(tmp / "store.duckdb")
        worker_rates = per_worker_rates(bootstrap, args.workers)

    print(f"records: {args.records:,} on {PARTITIONS} partitions; cores: {os.cpu_count()}; "
          f"worker threads: {args.worker_threads or 'torch default'}; "
          f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"single-process stream: {n_single:,} items, {single_rate:.0f} items/s")
    print(f"{args.workers} scoring workers + store: {n_scaled:,} items, {scaled_rate:.0f} items/s "
          f"(ratio {scaled_rate / single_rate:.2f})")
    for i, (n, r) in enumerate(worker_rates):
        print(f"  worker {i}: {n:,} messages, {r:.0f} items/s")


if __name__ == "__main__":
    main()
