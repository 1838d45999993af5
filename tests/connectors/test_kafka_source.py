"""The pure-Python Kafka source and the offset ledger, against a real local broker."""
from __future__ import annotations

import threading
import time

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.utils.shared import Shared
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewPartitions

from connectors.kafka.embedded import create_topics
from connectors.kafka.offsets import BrokerLag, DeliveryLedger, OffsetCommitter, committed_offsets
from connectors.kafka.source import KafkaSourceConfig, ReadFromKafka, RunControl


class _Session:
    """The source's session, and what the stand-in sink saw."""

    def __init__(self, until_idle_s: float | None) -> None:
        self.control = RunControl(until_idle_s=until_idle_s)
        self.ledger = DeliveryLedger()
        self.seen: list = []


class _Sessions:
    """A picklable session provider: one session per process, through Beam's Shared."""

    def __init__(self, until_idle_s: float | None = None) -> None:
        self._shared = Shared()
        self.until_idle_s = until_idle_s

    def __call__(self) -> _Session:
        return self._shared.acquire(lambda: _Session(self.until_idle_s))


class _Collect(beam.DoFn):
    """Acks every record at once (a stand-in for the DuckDB sink) and remembers it."""

    def __init__(self, sessions: _Sessions) -> None:
        self.sessions = sessions

    def setup(self) -> None:
        self.session = self.sessions()

    def process(self, record):
        self.session.seen.append(record)
        self.session.ledger.ack((record.kafka_topic, record.kafka_partition), record.kafka_offset)


def _run(config: KafkaSourceConfig, sessions: _Sessions) -> _Session:
    session = sessions()  # held here, so the pipeline's DoFns get this one
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        pipeline | ReadFromKafka(config, sessions) | beam.ParDo(_Collect(sessions))
    return session


def _read(bootstrap: str, group: str, topics: tuple[str, ...], until_idle_s: float = 2.0,
          **settings) -> tuple[list, KafkaSourceConfig]:
    config = KafkaSourceConfig(bootstrap, group, topics, discovery_interval_s=0.5, **settings)
    session = _run(config, _Sessions(until_idle_s))
    committer = OffsetCommitter(bootstrap, group, session.ledger)
    committer.commit()
    committer.close()
    return session.seen, config


def _produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, value in enumerate(values):
        producer.send(topic, value, partition=i % partitions)
    producer.flush()
    producer.close()


def test_ledger_commits_only_the_durable_prefix_and_skips_log_gaps():
    ledger = DeliveryLedger()
    p = ("news", 0)
    ledger.begin(p, 10)
    assert ledger.committable() == {p: 10}
    for offset in (10, 11, 14, 15):  # 12-13 are a gap in the log (compaction, tx markers)
        ledger.consumed(p, offset, 1000 + offset)
    assert ledger.ack(p, 11) == 1011
    assert ledger.committable() == {p: 10}  # 10 not durable yet: nothing past it
    ledger.ack(p, 10)
    assert ledger.committable() == {p: 14}
    ledger.ack(p, 15)
    assert ledger.committable() == {p: 14}
    ledger.ack(p, 14)
    assert ledger.committable() == {p: 16}
    assert ledger.pending_count() == 0
    ledger.mark_committed({p: 16})
    assert ledger.uncommitted() == {}


def test_idle_needs_an_empty_latest_poll_on_every_partition_not_just_time_since_the_last_records():
    """A bundle processed for longer than the idle limit does not end the run: records may have
    arrived meanwhile, and only an empty poll after it says its partition is drained."""
    control = RunControl(until_idle_s=0.2)
    control.note_records(("news", 0), 500)
    control.note_records(("news", 1), 3)
    time.sleep(0.3)  # the bundles outlast the idle limit
    assert not control.should_end()
    control.note_empty_poll(("news", 1))
    assert not control.should_end()  # partition 0 has not been polled since its records
    control.note_empty_poll(("news", 0))
    assert control.should_end() and control.should_end()  # and it stays ended


def test_reads_every_partition_then_resumes_from_committed_offsets(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=2)
    _produce(bootstrap, "news", [f"m{i}".encode() for i in range(20)], partitions=2)

    records, _ = _read(bootstrap, "g1", ("news",))
    assert sorted(r.raw for r in records) == sorted(f"m{i}".encode() for i in range(20))
    assert {(r.kafka_partition, r.kafka_offset) for r in records} == {(p, o) for p in (0, 1) for o in range(10)}
    assert all(r.location == f"news/{r.kafka_partition}/{r.kafka_offset}" for r in records)
    assert all(r.kafka_timestamp_ms > 0 for r in records)
    assert committed_offsets(bootstrap, "g1", [("news", 0), ("news", 1)]) == {("news", 0): 10, ("news", 1): 10}

    _produce(bootstrap, "news", [b"late-0", b"late-1"], partitions=2)
    again, _ = _read(bootstrap, "g1", ("news",))
    assert sorted(r.raw for r in again) == [b"late-0", b"late-1"]


def test_partition_added_while_running_is_read(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    _produce(bootstrap, "news", [b"first"], partitions=1)

    def grow_topic():
        time.sleep(2.0)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_partitions({"news": NewPartitions(total_count=2)})
        admin.close()
        _produce(bootstrap, "news", [b"to-p0", b"to-p1"], partitions=2)

    grower = threading.Thread(target=grow_topic)
    grower.start()
    records, _ = _read(bootstrap, "g2", ("news",), until_idle_s=5.0)
    grower.join()
    assert sorted((r.kafka_partition, r.raw) for r in records) == [(0, b"first"), (0, b"to-p0"), (1, b"to-p1")]


def test_stop_request_ends_an_endless_run(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    _produce(bootstrap, "news", [b"only"], partitions=1)
    config = KafkaSourceConfig(bootstrap, "g3", ("news",))
    sessions = _Sessions()
    threading.Timer(3.0, sessions().control.request_stop).start()
    started = time.monotonic()
    session = _run(config, sessions)
    assert 3.0 <= time.monotonic() - started < 15.0
    assert [r.raw for r in session.seen] == [b"only"]


def test_unreachable_broker_is_logged_and_retried(kafka_broker, caplog):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=1)
    _produce(bootstrap, "news", [b"before"], partitions=1)
    config = KafkaSourceConfig(bootstrap, "g4", ("news",), request_timeout_ms=1500, health_interval_s=0.5)
    sessions = _Sessions(until_idle_s=12.0)
    session = sessions()

    def bounce():
        deadline = time.monotonic() + 120
        while not session.seen:  # the outage comes once the source reads, however slow its start
            assert time.monotonic() < deadline, "the source read nothing in 120 s"
            time.sleep(0.1)
        kafka_broker.stop()
        time.sleep(3.0)
        kafka_broker.start()
        _produce(bootstrap, "news", [b"after"], partitions=1)

    bouncer = threading.Thread(target=bounce)
    bouncer.start()
    with caplog.at_level("WARNING", logger="connectors.kafka.source"):
        _run(config, sessions)
    bouncer.join()
    assert [r.raw for r in session.seen] == [b"before", b"after"]
    messages = [r.getMessage() for r in caplog.records if r.name == "connectors.kafka.source"]
    assert any("unreachable" in m and "retrying in" in m for m in messages), messages
    assert any("reachable again" in m for m in messages), messages


def test_broker_lag_counts_every_partition_from_the_groups_committed_offsets(kafka_broker):
    """The gauge once read 301 during a backlog of 18,773: it only knew partitions polled lately."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=3)
    create_topics(bootstrap, ["comments"], partitions=2)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for topic, partition, n in (("news", 0, 100), ("news", 2, 40), ("comments", 1, 25)):
        for i in range(n):
            producer.send(topic, b"x%d" % i, partition=partition)
    producer.flush()
    producer.close()
    lag = BrokerLag(bootstrap, "lag-test", ("news", "comments"))
    try:
        assert lag.refresh() == 165 and lag.value == 165  # nothing read, nothing committed
        ledger = DeliveryLedger()
        ledger.begin(("news", 0), 0)
        for offset in range(30):
            ledger.consumed(("news", 0), offset)
            ledger.ack(("news", 0), offset)
        committer = OffsetCommitter(bootstrap, "lag-test", ledger)
        committer.commit()
        committer.close()
        assert lag.refresh() == 135
    finally:
        lag.close()
    kafka_broker.stop()
    down = BrokerLag(bootstrap, "lag-test", ("news",), timeout_ms=1000)
    try:
        assert down.refresh() is None and down.value == 0  # no answer: the last value stays
    finally:
        down.close()


def test_workers_share_the_partitions_of_every_topic_by_index(kafka_broker):
    """Worker I of N reads partitions p with p % N == I, of each topic: together every record once."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=5)
    create_topics(bootstrap, ["comments"], partitions=2)
    _produce(bootstrap, "news", [f"n{i}".encode() for i in range(20)], 5)
    _produce(bootstrap, "comments", [f"c{i}".encode() for i in range(6)], 2)
    seen = []
    for index in range(2):
        records, _ = _read(bootstrap, "share", ("news", "comments"), worker_index=index, workers=2)
        assert {r.kafka_partition % 2 for r in records} == {index}
        seen += [(r.kafka_topic, r.kafka_partition, r.kafka_offset) for r in records]
    assert len(seen) == len(set(seen)) == 26


def test_a_finished_run_leaves_no_kafka_client_behind(kafka_broker):
    """Every consumer the source opens is closed by the end of the run, including the one that
    sizes partitions for the restriction methods (a DoFn copy whose teardown may never run)."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["quiet"], partitions=2)
    _produce(bootstrap, "quiet", [b"a", b"b", b"c"], partitions=2)
    before = set(threading.enumerate())
    records, _ = _read(bootstrap, "g-leak", ("quiet",), until_idle_s=1.0)
    assert len(records) == 3
    deadline = time.monotonic() + 5
    while (left := [t.name for t in set(threading.enumerate()) - before if t.name.startswith("kafka")]) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
