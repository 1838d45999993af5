"""The streaming job against a real broker, a real DuckDB file and the bundled model."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaProducer

from connectors.kafka.embedded import create_topics, free_port
from connectors.kafka.offsets import committed_offsets
from models.aggregation import AggregationConfig
from pipeline import backfill, stream, stream_transforms
from pipeline.cli import main
from pipeline.job_args import EXIT_STORE_FAULT
from pipeline.metrics import StreamMetrics, serve_prometheus

REPO = Path(__file__).resolve().parents[2]
T0 = 1714550400000  # 2024-05-01T08:00Z
TICKERS = ("AAPL", "TSLA", "NVDA", "MSFT")
PHRASES = ("beats estimates and raises guidance", "shares slump after profit warning",
           "to report earnings on Tuesday", "recalls two million cars", "wins a large cloud contract")


def records(n: int, start: int = 0) -> list[dict]:
    """n records in event-time order, 90 s apart; every 7th repeats an earlier text (novelty)."""
    out = []
    for i in range(start, start + n):
        phrase = PHRASES[(i // 7) % len(PHRASES)] if i % 7 == 6 else PHRASES[i % len(PHRASES)]
        out.append({"id": f"r{i}", "text": f"${TICKERS[i % len(TICKERS)]} {phrase}",
                    "published_at": T0 + i * 90_000, "source": "news" if i % 3 else "comment"})
    return out


def produce(bootstrap: str, values: list[bytes], topic: str = "news", rate_per_s: float | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for value in values:
        producer.send(topic, value)
        if rate_per_s:
            time.sleep(1 / rate_per_s)
    producer.flush()
    producer.close()


def encode(rows: list[dict]) -> list[bytes]:
    return [json.dumps(row).encode() for row in rows]


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def stream_args(bootstrap: str, db: Path, *extra: str) -> list[str]:
    return ["--bootstrap-servers", bootstrap, "--topics", "news", "--group-id", "tp-test", "--db", str(db),
            "--half-life", "1h", "6h", "--cadence", "5m", *extra]


def test_streams_each_record_once_dead_letters_keep_kafka_location(kafka_broker, tmp_path, monkeypatch):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=2)
    good = records(40)
    malformed = [b'{"id": "bad1", "text": "unterminated', b"\xff\xfe not utf-8", b'{"id": "bad3"}']
    produce(bootstrap, encode(good) + malformed + encode(good[:5]))  # 5 repeated ids at the end
    db = tmp_path / "tp.duckdb"

    assert stream.run(stream_args(bootstrap, db, "--until-idle", "2s")) == 0

    assert query(db, "SELECT count(*), count(DISTINCT id) FROM items") == [(40, 40)]
    dead = query(db, "SELECT raw, kafka_topic, kafka_partition, kafka_offset, source_location, reason FROM dead_letters")
    assert sorted(row[0] for row in dead) == sorted(malformed)
    for raw, topic, partition, offset, location, reason in dead:
        assert topic == "news" and location == f"news/{partition}/{offset}" and reason
    assert query(db, "SELECT count(DISTINCT ticker) FROM ticker_sentiment") == [(len(TICKERS),)]
    total = len(good) + len(malformed) + 5
    committed = committed_offsets(bootstrap, "tp-test", [("news", 0), ("news", 1)])
    assert sum(committed.values()) == total  # every record durable (or a dropped repeat) and committed

    # A second run resumes at the committed offsets: nothing new, nothing duplicated. (Its state
    # rebuild rewrites the points in event-time order: equal up to float summation order.)
    points_sql = "SELECT ticker, ts, half_life_s, n_items, sentiment FROM ticker_sentiment ORDER BY ALL"
    before = query(db, points_sql)
    monkeypatch.setenv("TICKERPULSE_DUCKDB_MEMORY_LIMIT", "256MB")  # a capped cache changes no result
    # ... and takes Beam's own flags as ever (only a flag neither knows is refused).
    metrics = stream.run_stream(stream_args(bootstrap, db, "--until-idle", "1s", "--direct_num_workers=1"))
    assert metrics.consumed == 0
    assert query(db, "SELECT count(*) FROM items") == [(40,)]
    after = query(db, points_sql)
    assert [row[:4] for row in after] == [row[:4] for row in before]
    assert [row[4] for row in after] == pytest.approx([row[4] for row in before], abs=1e-9)


@pytest.mark.parametrize("reopen_after_s", [None, 0.0], ids=["writer-kept", "writer-reopened-after-each-write"])
def test_stream_equals_backfill_of_the_same_topic(kafka_broker, tmp_path, monkeypatch, reopen_after_s):
    """Both score with the pipelines' default fp32 model, whose scores do not depend on batching.
    The stream's writer may reopen its connection between writes (as it does every few minutes)."""
    if reopen_after_s is not None:
        monkeypatch.setattr(stream_transforms, "REOPEN_AFTER_S", reopen_after_s)
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    rows = records(60)
    produce(bootstrap, encode(rows) + encode(rows[10:13]) + [b"not json"])
    streamed, backfilled = tmp_path / "stream.duckdb", tmp_path / "backfill.duckdb"

    assert stream.run(stream_args(bootstrap, streamed, "--until-idle", "2s")) == 0
    assert backfill.run(["--kafka-bootstrap", bootstrap, "--topics", "news", "--db", str(backfilled),
                         "--half-life", "1h", "6h", "--cadence", "5m"]) == 0

    exact_sql = ("SELECT id, ts, source, text, text_key, novelty_n, label, model, kafka_topic, kafka_partition, "
                 "kafka_offset FROM items ORDER BY id")
    assert query(streamed, exact_sql) == query(backfilled, exact_sql)
    numbers_sql = "SELECT score, confidence, relevance FROM items ORDER BY id"
    for s, b in zip(query(streamed, numbers_sql), query(backfilled, numbers_sql)):
        assert s == pytest.approx(b, abs=1e-4)  # fp32 over other batch shapes: last digits
    assert query(streamed, "SELECT * FROM item_tickers ORDER BY ALL") == query(backfilled, "SELECT * FROM item_tickers ORDER BY ALL")
    points_sql = ("SELECT ticker, ts, half_life_s, n_items, [t.item_id FOR t IN top_items], sentiment, ess, "
                  "mean_score FROM ticker_sentiment ORDER BY ticker, ts, half_life_s")
    streamed_points, backfilled_points = query(streamed, points_sql), query(backfilled, points_sql)
    assert [p[:5] for p in streamed_points] == [p[:5] for p in backfilled_points]  # same grid, items, top-k
    assert len(streamed_points) > 0
    for s, b in zip(streamed_points, backfilled_points):
        assert s[5:] == pytest.approx(b[5:], abs=1e-4, rel=1e-4)
    assert query(streamed, "SELECT raw, source_location FROM dead_letters") == [(b"not json", "news/0/63")]


def _stream_process(bootstrap: str, db: Path, log_path: Path, *extra: str, err_path: Path | None = None,
                    preexec_fn: Callable[[], None] | None = None, **env_values: str) -> subprocess.Popen:
    """The real job in its own process; stdout (and stderr, unless ``err_path``) to ``log_path``."""
    # Small polls: many bundles and commits, so a kill lands between two of them.
    env = {**os.environ, "PYTHONPATH": str(REPO), "TICKERPULSE_METRICS_INTERVAL": "1s",
           "TICKERPULSE_MAX_POLL_RECORDS": "5", **env_values}
    # Files, not pipes: a full pipe would block the job.
    with open(log_path, "ab") as log_file, open(err_path or os.devnull, "ab") as err_file:
        return subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "stream",
                                 *stream_args(bootstrap, db, *extra)], env=env, cwd=REPO,
                                stdout=log_file, stderr=err_file if err_path else subprocess.STDOUT,
                                preexec_fn=preexec_fn)


def _wait_for_commit(bootstrap: str, at_least: int, timeout_s: float, proc: subprocess.Popen,
                     log_path: Path) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        done = committed_offsets(bootstrap, "tp-test", [("news", 0)])[("news", 0)] or 0
        if done >= at_least:
            return done
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} offsets committed within {timeout_s}s: "
                         + log_path.read_text(errors="replace")[-3000:])


def test_kill_9_mid_stream_then_sigterm_leaves_exactly_n_items(kafka_broker, tmp_path, points_equal_the_macro):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    # 1,000 records in bundles of 5 take the job seconds; checking the committed offset takes
    # well under one, so the kill lands mid-stream (with 200 the job could finish first).
    n, first = 1100, 1000
    rows = encode(records(n))
    produce(bootstrap, rows[:first])
    db, log_path = tmp_path / "tp.duckdb", tmp_path / "stream.log"

    job = _stream_process(bootstrap, db, log_path)
    try:
        committed = _wait_for_commit(bootstrap, 20, 300, job, log_path)
    finally:
        job.kill()  # SIGKILL: no flush, no commit
        job.wait()
    assert committed < first
    produce(bootstrap, rows[first:])

    job = _stream_process(bootstrap, db, log_path)
    try:
        _wait_for_commit(bootstrap, n, 300, job, log_path)
    finally:
        output = _stop(job, log_path)
    assert "SIGTERM received" in output and "stream stopped: consumed" in output

    assert query(db, "SELECT count(*), count(DISTINCT id), min(id), max(kafka_offset) FROM items") == [(n, n, "r0", n - 1)]
    assert query(db, "SELECT count(*) FROM item_tickers") == [(n,)]
    assert query(db, "SELECT count(*) FROM dead_letters") == [(0,)]
    # The restart rebuilt each ticker's state: no point counts an item twice or misses one.
    wrong_counts = query(db, """
        SELECT count(*) FROM ticker_sentiment s WHERE n_items != (
            SELECT count(*) FROM items i JOIN item_tickers t ON t.item_id = i.id
            WHERE t.ticker = s.ticker AND i.ts <= s.ts AND i.ts > s.ts - INTERVAL 3 DAY)""")
    assert wrong_counts == [(0,)]
    assert query(db, "SELECT count(DISTINCT ticker) FROM ticker_sentiment") == [(len(TICKERS),)]
    assert points_equal_the_macro(db, AggregationConfig(half_lives_s=(3600.0, 21600.0), cadence_s=300.0)) > 0


def test_job_recovers_when_the_broker_restarts(kafka_broker, tmp_path, caplog):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    rows = encode(records(30))
    produce(bootstrap, rows[:15])

    def bounce():
        # The outage comes once the first records are durable, however slow the job's start.
        deadline = time.monotonic() + 120
        while (committed_offsets(bootstrap, "tp-test", [("news", 0)])[("news", 0)] or 0) < 15:
            assert time.monotonic() < deadline, "the job committed nothing in 120 s"
            time.sleep(0.2)
        kafka_broker.stop()
        time.sleep(8)  # longer than the source's 5 s request timeout; shorter blips are absorbed silently
        kafka_broker.start()
        produce(bootstrap, rows[15:])

    bouncer = threading.Thread(target=bounce)
    bouncer.start()
    db = tmp_path / "tp.duckdb"
    with caplog.at_level("WARNING"):
        assert stream.run(stream_args(bootstrap, db, "--until-idle", "8s")) == 0
    bouncer.join()
    assert query(db, "SELECT count(*) FROM items") == [(30,)]
    assert committed_offsets(bootstrap, "tp-test", [("news", 0)]) == {("news", 0): 30}
    assert any("unreachable" in r.getMessage() and "retrying in" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("runner_args", [
    ["--runner=DataflowRunner", "--project=tickerpulse-test", "--region=us-central1",
     "--temp_location=gs://tickerpulse-bucket/tmp", "--setup_file=./setup.py", "--streaming"],
    ["--runner=FlinkRunner", "--flink_master=localhost:8081", "--environment_type=LOOPBACK", "--streaming"],
])
@pytest.mark.parametrize("role", ["stream", "store"])
def test_the_stream_graph_constructs_for_remote_runners(kafka_broker, tmp_path, runner_args, role):
    """Built and translated to the runner API as a remote runner receives it (nothing opened here:
    the run is opened by the runner's worker)."""
    import functools
    import uuid

    from connectors.kafka.source import KafkaSourceConfig
    from pipeline import store
    from pipeline.job_args import linking, pipeline_options
    from pipeline.run_handle import RunHandle
    from pipeline.runner import make_pipeline
    from pipeline.stream_transforms import StreamRun

    create_topics(kafka_broker.bootstrap_servers, ["news"], partitions=2)
    argv = stream_args(kafka_broker.bootstrap_servers, tmp_path / "tp.duckdb", "--role", role,
                       *(["--points-topic", "points"] if role == "store" else []))
    args, beam_args = stream.parser().parse_known_args(argv + runner_args)
    pipeline = make_pipeline(pipeline_options(beam_args))
    assert type(pipeline.runner).__name__ == runner_args[0].split("=")[1]
    source = KafkaSourceConfig(args.bootstrap_servers, args.group_id, tuple(args.topics))
    handle = RunHandle(functools.partial(StreamRun.open, stream.settings(args, stream.check(args))),
                       f"stream-{uuid.uuid4()}")
    if role == "store":
        store.build(pipeline, source, handle)
    else:
        stream.build(pipeline, args, source, linking(args), handle)
    names = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}
    steps = ["Read Kafka", "Drop repeated ids", "Novelty", "Relevance", "Aggregate and write"]
    steps += ["Decode scored"] if role == "store" else ["Parse", "Extract tickers", "Score"]
    assert set(steps) <= names
    assert not (tmp_path / "tp.duckdb").exists()


def test_bad_arguments_exit_2_with_one_line(capsys):
    assert main(["stream", "--topics", "news"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--bootstrap-servers is required" in err
    for flag, value, reason in (("--until-idle", "soon", "not a duration"),
                                ("--duckdb-memory-limit", "lots", "not a DuckDB memory limit")):
        with pytest.raises(SystemExit) as exit_info:
            main(["stream", "--bootstrap-servers", "x:1", "--topics", "t", flag, value])
        assert exit_info.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert flag in last and reason in last


@pytest.mark.parametrize("workers", ["2", "0"])
def test_parallel_local_workers_are_refused_before_anything_opens(tmp_path, capsys, workers):
    """With parallel bundles Beam 2.77's local runner ended the job after one poll, exit 0, the
    rest of the topic unread."""
    db = tmp_path / "tp.duckdb"
    assert main(["stream", "--bootstrap-servers", "127.0.0.1:1", "--topics", "t", "--db", str(db),
                 f"--direct_num_workers={workers}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--direct_num_workers={workers}: the local stream runs one worker" in err
    assert not db.exists()


def test_a_typo_in_a_flag_is_one_line_exit_2_before_anything_opens(tmp_path):
    """The stream used to hand an unknown flag to Beam, which only logged that it dropped it."""
    db = tmp_path / "tp.duckdb"
    out = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "stream", "--bootstrap-servers",
                          "127.0.0.1:1", "--topics", "t", "--db", str(db), "--topcs", "x"],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2
    assert out.stderr == "tickerpulse stream: error: unrecognized arguments: --topcs\n"
    assert not db.exists()


def test_prometheus_endpoint_and_log_line_report_the_same_numbers():
    metrics = StreamMetrics(consumed=lambda: 7, lag=lambda: 3)
    metrics.add(scored=5, dead_lettered=1, duplicates=1, points=4, late=2)
    for seconds in (0.2, 0.4, 0.6, 0.8, 1.0):
        metrics.observe_latency(seconds)
    port = free_port()
    stop = serve_prometheus(metrics, port)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        stop()
    for line in ("tickerpulse_consumed_total 7.0", "tickerpulse_scored_total 5.0", "tickerpulse_dead_lettered_total 1.0",
                 "tickerpulse_duplicates_total 1.0", "tickerpulse_late_items_total 2.0", "tickerpulse_consumer_lag 3.0",
                 "tickerpulse_end_to_end_latency_seconds_count 5.0", "tickerpulse_end_to_end_latency_p50_seconds 0.6"):
        assert line in body, body
    assert metrics.line() == ("stream: consumed 7, scored 5, dead-lettered 1, duplicates 1, late 2, consumer lag 3, "
                              "end-to-end latency p50 600 ms, p99 992 ms")


def test_a_db_in_a_missing_directory_is_one_line(tmp_path, capsys):
    db = tmp_path / "no" / "x.duckdb"
    assert main(["stream", "--bootstrap-servers", "127.0.0.1:1", "--topics", "t", "--db", str(db)]) == 2
    assert capsys.readouterr().err.strip() == (f"tickerpulse stream: error: --db {db}: "
                                               f"directory {tmp_path}/no does not exist")


def test_a_model_that_is_not_a_directory_is_one_line(tmp_path, capsys):
    argv = ["stream", "--bootstrap-servers", "127.0.0.1:1", "--topics", "t", "--db", str(tmp_path / "x.duckdb")]
    assert main([*argv, "--model", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == (f"tickerpulse stream: error: model '{tmp_path}/none' is not a "
                                               "directory (expected a local checkpoint)")


def test_a_db_that_is_not_a_duckdb_file_is_one_line(tmp_path, capsys):
    (tmp_path / "in.csv").write_text("id,text\n")
    for db, problem in ((str(tmp_path / "in.csv"), "the file exists and is not a DuckDB database"),
                        (":memory:", "name a DuckDB file")):
        assert main(["stream", "--bootstrap-servers", "127.0.0.1:1", "--topics", "t", "--db", db]) == 2
        assert capsys.readouterr().err.strip().startswith(f"tickerpulse stream: error: --db {db!r}: {problem}")


def test_poison_records_are_dead_letters_and_the_stream_goes_on(kafka_broker, tmp_path, capsys):
    """A 5,000-digit integer once stopped the stream at the same offset on every restart."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["poison"])
    poison = [b'{"id": "p1", "text": "$AAPL", "n": ' + b"9" * 5000 + b"}",
              b'{"id": "p2", "text": "$AAPL", "published_at": ' + b"9" * 400 + b"}",
              b'{"id": "p3", "text": "x", "deep": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
              b'{"id": "p4", "text": "\\u0000\\u001b[2J"}' + b"\xff"]
    produce(bootstrap, poison, topic="poison")
    db = tmp_path / "tp.duckdb"
    argv = ["--bootstrap-servers", bootstrap, "--topics", "poison", "--group-id", "tp-poison", "--db", str(db),
            "--until-idle", "2s"]
    assert main(["stream", *argv]) == 3
    assert "warning: all 4 records were dead-lettered, none stored" in capsys.readouterr().err
    assert sorted(r[0][:14] for r in query(db, "SELECT reason FROM dead_letters")) == [
        "not JSON: Exce", "not JSON: too ", "not UTF-8: byt", "published_at o"]
    produce(bootstrap, encode([{"id": "ok", "text": "$AAPL beats", "published_at": 1714550400000}]), topic="poison")
    assert main(["stream", *argv]) == 0
    assert query(db, "SELECT id FROM items") == [("ok",)]


def _wait_for_commits(bootstrap: str, partitions: list[tuple[str, int]], at_least: int, timeout_s: float,
                      proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        if sum(v or 0 for v in committed_offsets(bootstrap, "tp-test", partitions).values()) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} offsets committed within {timeout_s}s: "
                         + log_path.read_text(errors="replace")[-3000:])


def _produce_to_partitions(bootstrap: str, topic: str, rows: list[dict], partitions: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, value in enumerate(encode(rows)):
        producer.send(topic, value, partition=i % partitions)
    producer.flush()
    producer.close()


def _kill_if_running(job: subprocess.Popen) -> None:
    """A test never leaves its job behind, whatever failed."""
    if job.poll() is None:
        job.kill()
        job.wait()


def _stop(job: subprocess.Popen, log_path: Path) -> str:
    if job.poll() is None:
        job.send_signal(signal.SIGTERM)
    try:
        job.wait(timeout=120)
    finally:
        _kill_if_running(job)
    output = log_path.read_text(errors="replace")
    assert job.returncode == 0, output[-3000:]
    return output


def test_a_lagging_topic_restates_the_points_it_belongs_to(kafka_broker, tmp_path, points_equal_the_macro):
    """Two topics, five partitions; the comments topic's backlog (earlier event times) arrives
    after the news topic's later items were stored. After catch-up every stored point equals
    ``sentiment_asof``/``sentiment_series`` over the stored items."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=3)
    create_topics(bootstrap, ["comments"], partitions=2)
    rows = [dict(row, published_at=T0 + i * 15_000) for i, row in enumerate(records(160))]  # ~5 per ticker per step
    behind, ahead = rows[::2], rows[1::2]  # interleaved event times: every lagging item is older than stored ones
    _produce_to_partitions(bootstrap, "news", ahead, 3)
    db, log_path = tmp_path / "tp.duckdb", tmp_path / "stream.log"
    job = _stream_process(bootstrap, db, log_path, "--topics", "comments", TICKERPULSE_MAX_POLL_RECORDS="20")
    try:
        _wait_for_commits(bootstrap, [("news", p) for p in range(3)], len(ahead), 300, job, log_path)
        _produce_to_partitions(bootstrap, "comments", behind, 2)
        _wait_for_commits(bootstrap, [("comments", p) for p in range(2)], len(behind), 300, job, log_path)
    finally:
        output = _stop(job, log_path)
    assert query(db, "SELECT count(*) FROM items") == [(len(rows),)]
    assert "late 0" in output
    cfg = AggregationConfig(half_lives_s=(3600.0, 21600.0), cadence_s=300.0)
    assert points_equal_the_macro(db, cfg) > 0


def test_a_burst_then_silence_is_visible_to_readers_within_the_snapshot_interval(kafka_broker, tmp_path):
    """A snapshot used to be published only on a later write: a burst inside the interval after
    the previous snapshot, then quiet, stayed invisible to query and the dashboard."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    interval_s = 4.0
    db, log_path = tmp_path / "tp.duckdb", tmp_path / "stream.log"
    job = _stream_process(bootstrap, db, log_path, TICKERPULSE_SNAPSHOT_INTERVAL=f"{interval_s:g}s",
                          TICKERPULSE_MAX_POLL_RECORDS="500")
    try:
        produce(bootstrap, encode(records(10)))
        first_visible = _visible(db, 10, 120)
        produce(bootstrap, encode(records(15, start=10)))  # inside the interval after that snapshot
        visible_at = _visible(db, 25, 60)
        with duckdb.connect(str(db) + ".snapshot.duckdb", read_only=True) as con:
            durable_at = con.execute("SELECT epoch(max(ingested_at)) FROM items").fetchone()[0]
    finally:
        _stop(job, log_path)
    assert visible_at - durable_at <= interval_s + 1.0 + 0.5, (first_visible, durable_at, visible_at)  # 0.5: the copy


def _visible(db: Path, n_items: int, timeout_s: float) -> float:
    """Poll ``open_for_read`` (what query and the dashboard use) until n items are visible."""
    from connectors.duckdb.snapshot import open_for_read

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open_for_read(db) as reader:
                if reader.con.execute("SELECT count(*) FROM items").fetchone()[0] >= n_items:
                    return time.time()
        except (FileNotFoundError, duckdb.Error):
            pass  # not created or no snapshot yet
        time.sleep(0.1)
    raise AssertionError(f"{n_items} items not visible within {timeout_s}s")


@pytest.mark.parametrize("fault", ["removed", "replaced"])
def test_a_removed_or_replaced_db_stops_the_job_before_it_commits_lost_records(kafka_broker, tmp_path, fault):
    """Deleting the file mid-stream once let the job commit offsets for 1,000 records that only
    reached the unlinked file, and it died with a ``cp`` traceback. A hard link keeps the job's
    file readable under another name, so the test sees exactly which rows reached it and when."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    n = 600
    produce(bootstrap, encode(records(n)))
    db, kept = tmp_path / "tp.duckdb", tmp_path / "kept.duckdb"
    log_path, err_path = tmp_path / "stream.log", tmp_path / "stream.err"
    job = _stream_process(bootstrap, db, log_path, err_path=err_path)
    try:
        _wait_for_commit(bootstrap, 20, 300, job, log_path)
        os.link(db, kept)
        if fault == "removed":
            db.unlink()
        else:
            other = tmp_path / "other.duckdb"
            duckdb.connect(str(other)).close()
            os.replace(other, db)
        faulted_at = time.time()
        job.wait(timeout=60)
    finally:
        _kill_if_running(job)
    assert job.returncode == EXIT_STORE_FAULT, err_path.read_text(errors="replace")[-3000:]
    assert "Traceback" not in log_path.read_text(errors="replace")
    what = "was removed" if fault == "removed" else "was replaced by another file"
    _assert_one_error_line(err_path, f"tickerpulse stream: error: {db} {what} while this job had it open")

    # Every committed offset is an item that reached the job's file before the fault.
    committed = committed_offsets(bootstrap, "tp-test", [("news", 0)])[("news", 0)]
    assert 20 <= committed < n
    durable = {row[0] for row in query(kept, "SELECT kafka_offset FROM items WHERE epoch(ingested_at) <= "
                                             f"{faulted_at}")}
    assert set(range(committed)) <= durable

    # The next run against the right file replays the rest: every record once.
    os.replace(kept, db)
    assert stream.run(stream_args(bootstrap, db, "--until-idle", "2s")) == 0
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM items") == [(n, n)]
    assert committed_offsets(bootstrap, "tp-test", [("news", 0)]) == {("news", 0): n}


def _assert_one_error_line(err_path: Path, starts_with: str) -> None:
    errors = err_path.read_text(errors="replace")
    assert "Traceback" not in errors, errors[-3000:]
    error_lines = [line for line in errors.splitlines() if "error" in line.lower()]
    assert error_lines == [errors.strip().splitlines()[-1]], errors[-3000:]  # one line, the last
    assert error_lines[0].startswith(starts_with), error_lines[0]


FILE_SIZE_LIMIT = 3_000_000  # bytes: more than the job's first writes need; reached after 460-600 records here


def _limit_file_size() -> None:
    """In the job's process: files may not grow past the limit, and a write past it fails with
    EFBIG (as on a full disk) instead of killing the process (SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_a_failing_write_stops_the_job_and_commits_only_what_is_in_the_file(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    n = 2000  # far more than fit under the limit: how many do depends on how the job batched its writes
    produce(bootstrap, encode(records(n)))
    db, log_path, err_path = tmp_path / "tp.duckdb", tmp_path / "stream.log", tmp_path / "stream.err"
    job = _stream_process(bootstrap, db, log_path, err_path=err_path, preexec_fn=_limit_file_size,
                          TICKERPULSE_MAX_POLL_RECORDS="20", TICKERPULSE_SNAPSHOT_INTERVAL="1s")
    try:
        job.wait(timeout=300)
    finally:
        _kill_if_running(job)
    assert job.returncode == EXIT_STORE_FAULT, err_path.read_text(errors="replace")[-3000:]
    _assert_one_error_line(err_path, "tickerpulse stream: error: ")
    assert "File too large" in err_path.read_text()

    committed = committed_offsets(bootstrap, "tp-test", [("news", 0)])[("news", 0)] or 0
    assert committed < n
    stored = {row[0] for row in query(db, "SELECT kafka_offset FROM items")}
    assert set(range(committed)) <= stored
    assert stream.run(stream_args(bootstrap, db, "--until-idle", "2s")) == 0  # no limit: the rest replayed
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM items") == [(n, n)]


@contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """``path`` refuses writes, even to root (which writes through permission bits: the
    immutable attribute stops it)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("root without chattr +i (CAP_LINUX_IMMUTABLE): cannot make a file unwritable")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("target", ["file", "directory"])
def test_an_unwritable_db_or_directory_is_one_line_exit_2(tmp_path, capsys, target):
    directory = tmp_path / "store"
    directory.mkdir()
    db = directory / "tp.duckdb"
    if target == "file":
        duckdb.connect(str(db)).close()
    with _unwritable(db if target == "file" else directory):
        assert main(["stream", "--bootstrap-servers", "127.0.0.1:1", "--topics", "t", "--db", str(db)]) == 2
    reason = "the file is not writable" if target == "file" else f"directory {directory} is not writable"
    assert capsys.readouterr().err.strip() == f"tickerpulse stream: error: --db {db}: {reason}"


def test_after_a_store_fault_nothing_is_acknowledged_committed_or_read(kafka_broker, tmp_path):
    """``StreamRun`` over a real file, ledger and committer: the bundle that meets the fault stays
    pending, so its offsets are never committed; the source is asked to stop once."""
    from connectors.duckdb.sink import DuckDBSink
    from connectors.kafka.offsets import DeliveryLedger, OffsetCommitter
    from pipeline.stream_state import rebuild_state
    from pipeline.stream_transforms import StreamRun
    from tests.pipeline.test_stream_restatement import CFG, item

    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    db = tmp_path / "tp.duckdb"
    sink = DuckDBSink(str(db))
    ledger = DeliveryLedger()
    ledger.begin(("news", 0), 0)
    for offset in range(6):
        ledger.consumed(("news", 0), offset)
    committer = OffsetCommitter(bootstrap, "tp-test", ledger, interval_s=0, before_commit=sink.check_file)
    run = StreamRun(sink, ledger, committer, StreamMetrics(), rebuild_state(sink, CFG)[0])
    bundle = [item(i, T0 / 1000 + 60 * i, ("AAPL",), 0.5, 0.1).with_(kafka_topic="news", kafka_partition=0,
                                                                     kafka_offset=i) for i in range(6)]
    run.write_scored(bundle[:2])  # durable, acknowledged, committed
    assert committed_offsets(bootstrap, "tp-test", [("news", 0)]) == {("news", 0): 2}
    db.unlink()
    run.write_scored(bundle[2:4])
    run.dropped(bundle[4:])  # a duplicate after the fault is not acknowledged either
    run.commit_due()
    assert run.stored(["i0000"]) == set()
    run.close()
    assert run.control.stop_requested.is_set() and "was removed" in str(run.fault)
    assert ledger.committable() == {("news", 0): 2} and ledger.pending_count() == 4
    assert committed_offsets(bootstrap, "tp-test", [("news", 0)]) == {("news", 0): 2}


def test_a_quiet_job_stops_within_seconds_of_losing_its_file(kafka_broker, tmp_path):
    """With nothing to write or commit, the once-a-second housekeeping still checks the file."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    produce(bootstrap, encode(records(10)))
    db, log_path, err_path = tmp_path / "tp.duckdb", tmp_path / "stream.log", tmp_path / "stream.err"
    job = _stream_process(bootstrap, db, log_path, err_path=err_path, TICKERPULSE_SNAPSHOT_INTERVAL="1s")
    try:
        _wait_for_commit(bootstrap, 10, 300, job, log_path)
        time.sleep(3)  # the last write's snapshot is published: no snapshot is due either
        db.unlink()
        job.wait(timeout=30)
    finally:
        _kill_if_running(job)
    assert job.returncode == EXIT_STORE_FAULT
    _assert_one_error_line(err_path, f"tickerpulse stream: error: {db} was removed while this job had it open")
