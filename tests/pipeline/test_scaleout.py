"""The scale-out against a real broker, real DuckDB files and the bundled model: two scoring
workers (``stream --role score``) and one store (``stream --role store``) as separate processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.kafka.embedded import create_topics
from connectors.kafka.offsets import committed_offsets
from models.aggregation import AggregationConfig

REPO = Path(__file__).resolve().parents[2]
T0 = 1714550400000  # 2024-05-01T08:00Z
TICKERS = ("AAPL", "TSLA", "NVDA", "MSFT")
PHRASES = ("beats estimates and raises guidance", "shares slump after profit warning",
           "to report earnings on Tuesday", "recalls two million cars", "wins a large cloud contract")
CFG = AggregationConfig(half_lives_s=(3600.0, 21600.0), cadence_s=300.0)
INPUT_PARTITIONS, SCORED_PARTITIONS = 4, 3
AGGREGATION = ["--half-life", "1h", "6h", "--cadence", "5m"]


def records(n: int) -> list[dict]:
    """Event times 20 s apart (several items per ticker per step); every 7th repeats a text."""
    return [{"id": f"r{i}", "text": f"${TICKERS[i % len(TICKERS)]} {PHRASES[(i // 7 if i % 7 == 6 else i) % len(PHRASES)]}",
             "published_at": T0 + i * 20_000, "source": "news" if i % 3 else "comment"} for i in range(n)]


MALFORMED = [b'{"id": "bad1", "text": "unterminated', b"\xff\xfe not utf-8", b'{"id": "bad3"}']


def produce(bootstrap: str, values: list[bytes]) -> list[tuple[str, int, int]]:
    """Over the input partitions in turn; returns each record's (topic, partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    futures = [producer.send("news", value, partition=i % INPUT_PARTITIONS) for i, value in enumerate(values)]
    producer.flush()
    producer.close()
    return [(m.topic, m.partition, m.offset) for m in (f.get(timeout=10) for f in futures)]


def _process(role_args: list[str], log_path: Path, max_poll_records: int = 5) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TICKERPULSE_METRICS_INTERVAL": "1s",
           "TICKERPULSE_MAX_POLL_RECORDS": str(max_poll_records)}
    with open(log_path, "ab") as log_file:  # a file, not a pipe: a full pipe would block the job
        return subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "stream", *role_args],
                                env=env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)


class ScaleOut:
    """Two scoring workers and one store over the ``news`` topic, each restartable."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.db = tmp_path / "tp.duckdb"
        self.logs = {name: tmp_path / f"{name}.log" for name in ("worker0", "worker1", "store")}
        self.procs: dict[str, subprocess.Popen] = {}
        create_topics(bootstrap, ["news"], partitions=INPUT_PARTITIONS)
        create_topics(bootstrap, ["scored"], partitions=SCORED_PARTITIONS)
        create_topics(bootstrap, ["points"], partitions=2)

    def start(self, name: str) -> None:
        common = ["--bootstrap-servers", self.bootstrap, *AGGREGATION]
        if name == "store":
            args = [*common, "--role", "store", "--topics", "scored", "--points-topic", "points",
                    "--group-id", "tp-store", "--db", str(self.db)]
        else:
            args = [*common, "--role", "score", "--topics", "news", "--scored-topic", "scored",
                    "--group-id", "tp-score", "--worker-index", name[-1], "--workers", "2"]
        self.procs[name] = _process(args, self.logs[name])

    def start_all(self) -> None:
        for name in self.logs:
            self.start(name)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()  # SIGKILL: no flush, no commit
        proc.wait()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited: " + self.logs[name].read_text(errors="replace")[-3000:]

    def committed(self, group: str, topic: str, partitions: int, only: set[int] | None = None) -> int:
        parts = [(topic, p) for p in range(partitions) if only is None or p in only]
        return sum(v or 0 for v in committed_offsets(self.bootstrap, group, parts).values())

    def wait_until(self, condition, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError("timed out: " + "".join(f"\n--- {n}\n" + p.read_text(errors="replace")[-2000:]
                                                     for n, p in self.logs.items()))

    def wait_until_landed(self, produced: int) -> None:
        """Workers committed every input record, and the store every scored record."""
        self.wait_until(lambda: self.committed("tp-score", "news", INPUT_PARTITIONS) == produced)
        scored_end = sum(_end_offsets(self.bootstrap, "scored", SCORED_PARTITIONS).values())
        assert scored_end >= produced  # one message per input record, plus the copies of replays
        self.wait_until(lambda: self.committed("tp-store", "scored", SCORED_PARTITIONS) == scored_end)

    def stop_all(self) -> dict[str, str]:
        outputs = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            outputs[name] = self.logs[name].read_text(errors="replace")
            assert proc.returncode == 0, outputs[name][-3000:]
        return outputs


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def read_points_topic(bootstrap: str) -> dict[tuple[str, float, float], dict]:
    """The last message per (ticker, ts, half_life_s) of the points topic, checking its key."""
    ends = _end_offsets(bootstrap, "points", 2)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10_000)
    tps = [TopicPartition("points", p) for p in ends]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    last: dict[tuple[str, float, float], dict] = {}
    try:
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            for batch in consumer.poll(timeout_ms=1000).values():
                for message in batch:
                    point = json.loads(message.value)
                    assert message.key == point["ticker"].encode() and point["kind"] == "point"
                    ts_s = datetime.fromisoformat(point["ts"]).timestamp()
                    last[(point["ticker"], ts_s, point["half_life_s"])] = point
    finally:
        consumer.close()
    return last


def check_landed(db: Path, bootstrap: str, values: list[bytes], located: list[tuple[str, int, int]],
                 points_equal_the_macro) -> None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        items = con.execute("SELECT id, kafka_topic, kafka_partition, kafka_offset FROM items").fetchall()
        dead = con.execute("SELECT raw, kafka_topic, kafka_partition, kafka_offset, stage FROM dead_letters").fetchall()
        stored_points = {(r[0], r[1], r[2]): r[3:] for r in con.execute(
            "SELECT ticker, epoch(ts), half_life_s, sentiment, n_items, ess, mean_score, "
            "[(t.item_id, t.weight) FOR t IN top_items] FROM ticker_sentiment").fetchall()}
    finally:
        con.close()
    # Every input record exactly once: each id one item, stored from one of the places it was
    # produced (a repeated id: either copy, whichever reached the store first); each malformed
    # record one dead letter at its own Kafka location.
    produced_at: dict[str, set[tuple[str, int, int]]] = {}
    for value, origin in zip(values, located):
        if value not in MALFORMED:
            produced_at.setdefault(json.loads(value)["id"], set()).add(origin)
    assert len(items) == len({row[0] for row in items}) == len(produced_at)
    assert all(tuple(row[1:4]) in produced_at[row[0]] for row in items)
    assert sorted((row[0], tuple(row[1:4]), row[4]) for row in dead) == sorted(
        (value, origin, "parse") for value, origin in zip(values, located) if value in MALFORMED)
    assert points_equal_the_macro(db, CFG) > 0
    # The points topic carries the current value of every stored point, and nothing else.
    published = read_points_topic(bootstrap)
    assert published.keys() == stored_points.keys()
    for key, (sentiment, n, ess, mean_score, top) in stored_points.items():
        point = published[key]
        assert (point["sentiment"], point["n_items"], point["ess"], point["mean_score"]) == (sentiment, n, ess, mean_score), key
        assert [(t["item_id"], t["weight"]) for t in point["top_items"]] == [tuple(t) for t in top], key


def _corpus(n: int) -> list[bytes]:
    """n good records, the malformed ones, and 5 of the good ones again (repeated ids)."""
    good = [json.dumps(row).encode() for row in records(n)]
    return good + MALFORMED + good[:5]


def test_two_workers_and_a_store_land_every_record_once_through_kill_9_of_a_worker_and_of_the_store(
        kafka_broker, tmp_path, points_equal_the_macro):
    """One run, two kills (one process at a time, each mid-run), both restarted: every input
    record is stored exactly once, every point equals the macro and is on the points topic."""
    bootstrap = kafka_broker.bootstrap_servers
    cluster = ScaleOut(bootstrap, tmp_path)
    values = _corpus(300)
    first = 2 * len(values) // 3
    located = produce(bootstrap, values[:first])
    cluster.start_all()
    worker0_partitions = {p for p in range(INPUT_PARTITIONS) if p % 2 == 0}
    try:
        cluster.wait_until(lambda: cluster.committed("tp-score", "news", INPUT_PARTITIONS, worker0_partitions) >= 10)
        time.sleep(0.5)  # commits are at most once a second: records published since, not committed
        cluster.kill("worker0")  # its partitions wait; worker 1 and the store go on
        stored_before = cluster.committed("tp-store", "scored", SCORED_PARTITIONS)
        located += produce(bootstrap, values[first:])
        cluster.start("worker0")
        # Worker 1's share of the rest reaches the store while worker 0 starts again: the store
        # is killed mid-run (worker 0's share of the rest is not published yet).
        cluster.wait_until(lambda: cluster.committed("tp-store", "scored", SCORED_PARTITIONS) >= stored_before + 10)
        time.sleep(0.5)  # rows written since the last commit
        cluster.kill("store")
        assert cluster.committed("tp-score", "news", INPUT_PARTITIONS, worker0_partitions) < len(values) // 2
        cluster.start("store")
        cluster.wait_until_landed(len(values))
    finally:
        outputs = cluster.stop_all()
    assert "resumed state from" in outputs["store"]
    assert "SIGTERM received" in outputs["worker1"] and "stream stopped: consumed" in outputs["worker0"]
    check_landed(cluster.db, bootstrap, values, located, points_equal_the_macro)


def outage_felt(cluster: ScaleOut) -> bool:
    return any("unreachable" in log.read_text(errors="replace") for log in cluster.logs.values())


def between_writes(bootstrap: str, still_s: float = 1.5) -> bool:
    """Whether neither the scored nor the points topic grew over ``still_s``: no publish in flight."""
    def ends() -> tuple[dict[int, int], dict[int, int]]:
        return _end_offsets(bootstrap, "scored", SCORED_PARTITIONS), _end_offsets(bootstrap, "points", 2)
    before = ends()
    time.sleep(still_s)
    return ends() == before


def test_two_workers_and_a_store_ride_out_a_broker_restart(kafka_broker, tmp_path, points_equal_the_macro):
    """The broker stops mid-run, with half the input landed and every process connected, and
    comes back after at least 8 s (longer than the source's 5 s request timeout), once some
    process has felt the outage: every process stays up and exits cleanly, and every record
    still lands once, with every point on the points topic.

    It stops between writes: the embedded broker (noida-db 0.2.3) loses the last acknowledged
    records when stopped while a producer writes (the last 1-2 in 2 of 3 tries, measured),
    which no client can make good; Kafka flushes its log on a controlled shutdown. A process
    busy for the whole outage logs nothing, so the outage lasts until one has seen it (40 s at
    most)."""
    bootstrap = kafka_broker.bootstrap_servers
    cluster = ScaleOut(bootstrap, tmp_path)
    values = _corpus(200)
    half = len(values) // 2
    located = produce(bootstrap, values[:half])
    cluster.start_all()
    try:
        cluster.wait_until(lambda: cluster.committed("tp-store", "scored", SCORED_PARTITIONS) >= 10)
        cluster.wait_until(lambda: between_writes(bootstrap))
        kafka_broker.stop()
        felt_by_40_s = time.monotonic() + 40
        time.sleep(8)
        while not outage_felt(cluster) and time.monotonic() < felt_by_40_s:
            time.sleep(0.5)
        cluster.check_alive()
        kafka_broker.start()
        located += produce(bootstrap, values[half:])
        cluster.wait_until_landed(len(values))
    finally:
        cluster.stop_all()
    assert outage_felt(cluster)
    check_landed(cluster.db, bootstrap, values, located, points_equal_the_macro)


@pytest.mark.parametrize("argv, message", [
    (["--role", "score"], "--role score needs --scored-topic"),
    (["--role", "score", "--scored-topic", "s", "--worker-index", "2", "--workers", "2"],
     "--worker-index must be in 0..--workers-1, not 2 of 2"),
    (["--role", "score", "--scored-topic", "t"], "--scored-topic t is also an input topic"),
    (["--role", "store"], "--role store needs --points-topic"),
    (["--role", "store", "--points-topic", "p", "--workers", "2"], "--workers applies only to --role score"),
    (["--points-topic", "p"], "--points-topic applies only to --role store"),
])
def test_bad_role_arguments_exit_2_with_one_line(argv, message, capsys):
    from pipeline.cli import main

    assert main(["stream", "--bootstrap-servers", "127.0.0.1:1", "--topics", "t", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"tickerpulse stream: error: {message}"
