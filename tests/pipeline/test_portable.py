"""The backfill and stream graphs with their SDK harness in other processes, as every distributed
runner runs them.

Each against the in-process run of the same input:
- Beam's Python job service with an EXTERNAL environment: a worker pool started here
  (``apache_beam.runners.worker.worker_pool_main``) starts the SDK harness as its own process
  (backfill and stream);
- FnApiRunner's multi-processing mode with two SDK-harness processes, which split the bundles
  (backfill; the stream's steps share one DuckDB writer, so it runs in one worker process).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaProducer

from connectors.duckdb.snapshot import snapshot_path
from connectors.kafka.embedded import create_topics, free_port
from connectors.kafka.offsets import committed_offsets
from models.aggregation import AggregationConfig
from pipeline.backfill import run_backfill

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "pipeline" / "demo_data"
FLOAT_COLUMNS = {"score", "prob_negative", "prob_neutral", "prob_positive", "confidence", "relevance",
                 "sentiment", "ess", "mean_score"}
# What the run itself stamps (wall-clock times), not what it computes.
RUN_STAMPS = {"items": "ingested_at", "dead_letters": "seen_at"}
TABLES = ("items", "item_tickers", "ticker_sentiment", "dead_letters")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Two files of the demo corpus: duplicates, syndicated copies and malformed lines included."""
    folder = tmp_path_factory.mktemp("portable")
    paths = []
    for name, head in (("news.jsonl", 45), ("comments.jsonl", 27)):
        lines = (DEMO / name).read_bytes().splitlines(keepends=True)
        path = folder / name
        path.write_bytes(b"".join(lines[:head] + lines[-5:]))  # the malformed records are at the end
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def in_process(inputs, tmp_path_factory) -> dict[str, list[dict]]:
    db = tmp_path_factory.mktemp("in-process") / "tp.duckdb"
    summary = run_backfill(_argv(inputs, db))
    assert summary.scored > 0 and summary.dead_letters > 0
    return _tables(db)


AGGREGATION = ["--half-life", "1h", "6h", "--cadence", "5m"]
CFG = AggregationConfig(half_lives_s=(3600.0, 21600.0), cadence_s=300.0)


def _argv(inputs: list[Path], db: Path) -> list[str]:
    return ["--input", *map(str, inputs), "--db", str(db), *AGGREGATION]


def _venv_env() -> dict[str, str]:
    """Beam's worker pool and multi-processing mode start workers with ``python`` from PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO)}


def _job_process(command: str, argv: list[str], beam_flags: list[str]) -> str:
    done = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), command, *argv, *beam_flags],
                          env=_venv_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def _portable_flags(job_port: int, pool_port: int) -> list[str]:
    return ["--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}"]


def _tables(db: Path) -> dict[str, list[dict]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {}
        for table in TABLES:
            exclude = f" EXCLUDE ({RUN_STAMPS[table]})" if table in RUN_STAMPS else ""
            cursor = con.execute(f"SELECT *{exclude} FROM {table} ORDER BY ALL")
            names = [d[0] for d in cursor.description]
            tables[table] = [dict(zip(names, row)) for row in cursor.fetchall()]
        return tables
    finally:
        con.close()


def _assert_same(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> None:
    """Same rows; scores within 1e-4 (another process may batch texts differently: fp32 is
    batch-independent to ~1e-6, docs/model.md)."""
    for table in TABLES:
        assert len(got[table]) == len(want[table]), table
        for row, expected in zip(got[table], want[table]):
            exact = {k: v for k, v in row.items() if k not in FLOAT_COLUMNS and k != "top_items"}
            assert exact == {k: v for k, v in expected.items() if k not in FLOAT_COLUMNS and k != "top_items"}, table
            for column in FLOAT_COLUMNS & row.keys():
                assert row[column] == pytest.approx(expected[column], abs=1e-4), (table, column, row)
            if "top_items" in row:
                assert [t["item_id"] for t in row["top_items"]] == [t["item_id"] for t in expected["top_items"]]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout_s} s: {process.args}")


@pytest.fixture
def job_service(tmp_path) -> Iterator[tuple[int, int]]:
    """(job endpoint port, worker pool port): both real Beam services, in their own processes."""
    pool_port, job_port = free_port(), free_port()
    commands = ([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
                [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"])
    logs = [open(tmp_path / f"service-{i}.log", "wb") for i in range(2)]
    services = [subprocess.Popen(cmd, env=_venv_env(), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
                for cmd, log in zip(commands, logs)]
    try:
        for port, service in zip((pool_port, job_port), services):
            _wait_for_port(port, service)
        yield job_port, pool_port
    finally:
        for service in services:
            service.kill()
            service.wait(timeout=30)
        for log in logs:
            log.close()
    pool_log = (tmp_path / "service-0.log").read_text(errors="replace")
    assert "Starting worker" in pool_log  # the harness ran as the pool's process, not in the job's


def test_job_service_with_an_external_worker_pool_stores_what_the_in_process_run_stores(
        inputs, in_process, job_service, tmp_path):
    db = tmp_path / "portable.duckdb"
    _job_process("backfill", _argv(inputs, db), _portable_flags(*job_service))
    _assert_same(_tables(db), in_process)


def test_two_sdk_harness_processes_store_what_the_in_process_run_stores(inputs, in_process, tmp_path):
    db = tmp_path / "two-workers.duckdb"
    log = _job_process("backfill", _argv(inputs, db), ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert log.count("Python sdk harness exiting") >= 2  # two harness processes ran
    _assert_same(_tables(db), in_process)


def test_stream_on_the_job_service_with_an_external_worker_pool_stores_what_the_in_process_run_stores(
        kafka_broker, inputs, job_service, tmp_path, points_equal_the_macro):
    """The same records from two topics (three partitions), read by two consumer groups: one job
    runs here, the other in the pool's harness process, which opens the DuckDB file, the ledger
    and the committer there, and closes them (final commit and snapshot) when its steps are torn
    down."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=2)
    create_topics(bootstrap, ["comments"], partitions=1)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for path, topic in zip(inputs, ("news", "comments")):
        for i, line in enumerate(path.read_bytes().splitlines()):
            producer.send(topic, line, partition=i % (2 if topic == "news" else 1))
    producer.flush()
    producer.close()
    partitions = [("news", 0), ("news", 1), ("comments", 0)]
    here, there = tmp_path / "here.duckdb", tmp_path / "there.duckdb"

    def stream_argv(db: Path, group: str) -> list[str]:
        return ["--bootstrap-servers", bootstrap, "--topics", "news", "comments", "--group-id", group,
                "--db", str(db), "--until-idle", "3s", *AGGREGATION]

    here_log = _job_process("stream", stream_argv(here, "here"), [])
    # Snapshots an hour apart: only the run's close, at the harness's teardown, publishes the last.
    there_log = _job_process("stream", [*stream_argv(there, "there"), "--snapshot-interval", "1h"],
                             _portable_flags(*job_service))
    # The launcher reports the workers' counts: what the in-process run counted itself.
    counted_here = re.search(r"stream stopped: consumed ([\d,]*\d), scored ([\d,]*\d), dead-lettered ([\d,]*\d)", here_log)
    counted_there = re.search(r"stream stopped: read ([\d,]*\d), scored ([\d,]*\d), dead-lettered ([\d,]*\d)", there_log)
    assert counted_here and counted_there, (here_log[-1500:], there_log[-1500:])
    assert counted_there.groups() == counted_here.groups()

    want = _tables(here)
    assert want["items"] and want["dead_letters"] and want["ticker_sentiment"]
    _assert_same(_tables(there), want)
    points_equal_the_macro(there, CFG)
    snapshot = _tables(Path(snapshot_path(there)))
    assert len(snapshot["items"]) == len(want["items"])
    assert committed_offsets(bootstrap, "there", partitions) == committed_offsets(bootstrap, "here", partitions)
    assert sum(committed_offsets(bootstrap, "there", partitions).values()) == sum(
        len(path.read_bytes().splitlines()) for path in inputs)
