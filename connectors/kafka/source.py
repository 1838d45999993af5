"""An unbounded Kafka source for Beam in pure Python: one splittable DoFn per topic-partition.

Why not Beam's ReadFromKafka: it is a Java cross-language transform (needs a JVM and an
expansion service). Here kafka-python does the reading, so the job runs on the local
FnApiRunner with nothing but pip packages, and on any runner that supports Python SDFs.

Shape: ``partition slots -> ReadPartition -> RawRecord``. Each slot is a (topic, partition); a
slot whose partition does not exist yet polls the topic's metadata and starts reading once the
partition is added (see :func:`partition_slots` for why not a discovery SDF). ``ReadPartition``'s
restriction is the range of offsets still to read, starting at the group's committed offset.

The source shares a :class:`SourceSession` with the sink of the same worker process: its
:class:`RunControl` (the stop flag set by SIGINT/SIGTERM or a store fault, the until-idle clock,
consumption counters and lag) and the :class:`DeliveryLedger` of the offsets it handed out. The
job passes a picklable ``session`` callable that returns that process's session (the pipeline
reaches it through Beam's ``Shared``), so the source imports nothing of the job.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from connectors.kafka import RECONNECT
from connectors.kafka.offsets import DeliveryLedger, Partition
from connectors.records import RawRecord

log = logging.getLogger(__name__)

END = sys.maxsize  # the restriction's stop: claiming it ends the element


@dataclass(frozen=True)
class KafkaSourceConfig:
    """Connection and polling settings; picklable, so it travels with the DoFns."""

    bootstrap_servers: str
    group_id: str
    topics: tuple[str, ...]
    poll_timeout_ms: int = 100
    max_records: int = 500
    discovery_interval_s: float = 5.0
    health_interval_s: float = 2.0
    spare_partitions: int = 8  # partitions that may be added to each topic while the job runs
    request_timeout_ms: int = 5000
    # A static share of the partitions among ``workers`` processes: this one reads the partitions
    # p of each topic with p % workers == worker_index (the scoring workers, pipeline/score_worker.py).
    worker_index: int = 0
    workers: int = 1

    def consumer(self, client_id: str) -> KafkaConsumer:
        """A consumer that never auto-commits: offsets move only when rows are durable."""
        return KafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=self.group_id,
                             client_id=client_id, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=self.poll_timeout_ms,
                             request_timeout_ms=max(self.request_timeout_ms, self.poll_timeout_ms + 1000),
                             **RECONNECT)


@dataclass
class RunControl:
    """What the source shares with the rest of the job in its process: when to stop, and what it read."""

    until_idle_s: float | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    last_record_at: float | None = None  # the idle clock starts at the first poll, not at setup
    consumed: int = 0
    lag: dict[Partition, int] = field(default_factory=dict)
    # Whether a partition's latest poll came back empty: a poll that returned records says
    # nothing of what arrived while its bundle was processed, however long that took.
    drained: dict[Partition, bool] = field(default_factory=dict)
    _ended: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note_records(self, partition: Partition, count: int) -> None:
        with self._lock:
            self.consumed += count
            self.last_record_at = time.monotonic()
            self.drained[partition] = False

    def note_empty_poll(self, partition: Partition) -> None:
        with self._lock:
            self.drained[partition] = True

    def note_outage(self) -> None:
        """An unreachable broker is not an idle topic: restart the idle clock."""
        with self._lock:
            self.last_record_at = time.monotonic()

    def request_stop(self) -> None:
        self.stop_requested.set()

    def should_end(self) -> bool:
        """True once stopped, or idle for ``until_idle_s`` with no lag and every polled partition's
        latest poll empty; stays true so every partition ends."""
        with self._lock:
            if self.last_record_at is None:
                self.last_record_at = time.monotonic()
            if not self._ended:
                idle = time.monotonic() - self.last_record_at
                # Caught up means idle, no known lag AND an empty latest poll everywhere: a slow
                # bundle delays the next poll past the idle limit without the topic being drained
                # (a 30-minute bench under load once ended this way with 23,210 of 90,000 read).
                self._ended = self.stop_requested.is_set() or (
                    self.until_idle_s is not None and idle >= self.until_idle_s and not any(self.lag.values())
                    and all(self.drained.values()))
            return self._ended

    def total_lag(self) -> int:
        return sum(self.lag.values())


class SourceSession(Protocol):
    """The source's side of what it shares with the sink in one worker process."""

    control: RunControl
    ledger: DeliveryLedger


SessionProvider = Callable[[], SourceSession]  # picklable; called in the worker process


class Backoff:
    """Exponential back-off with one clear log line per outage and one on recovery."""

    def __init__(self, what: str, initial_s: float = 0.5, max_s: float = 30.0) -> None:
        self.what = what
        self.initial_s = initial_s
        self.max_s = max_s
        self._delay = 0.0
        self._retry_at = 0.0
        self._down_since: float | None = None

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._delay = min(self.max_s, self._delay * 2 if self._delay else self.initial_s)
        self._retry_at = now + self._delay
        if self._down_since is None:
            self._down_since = now
        log.warning("Kafka broker %s unreachable (%s: %s); retrying in %.1fs",
                    self.what, type(exc).__name__, exc, self._delay)

    def succeeded(self) -> None:
        if self._down_since is not None:
            log.warning("Kafka broker %s reachable again after %.1fs", self.what,
                        time.monotonic() - self._down_since)
        self._delay = 0.0
        self._down_since = None

    def waiting(self) -> float:
        """Seconds left before the next attempt (0: go ahead)."""
        return max(0.0, self._retry_at - time.monotonic())


class _UnboundedOffsetTracker(OffsetRestrictionTracker):
    """Offsets up to ``END``; claiming ``END`` finishes the element (stop or idle)."""

    def is_bounded(self) -> bool:
        return False


def _wait_politely(backoff: Backoff, cap_s: float) -> bool:
    """Sleep up to ``cap_s`` of a pending back-off; True while still backing off."""
    wait = backoff.waiting()
    if wait > 0:
        time.sleep(min(wait, cap_s))
    return backoff.waiting() > 0


class PartitionDirectory:
    """How many partitions each topic has, refreshed at most every ``interval_s``."""

    def __init__(self, config: KafkaSourceConfig) -> None:
        self.config = config
        self._consumer: KafkaConsumer | None = None
        self._counts: dict[str, int] = {}
        self._next_refresh = 0.0
        self.backoff = Backoff(config.bootstrap_servers)
        self.known = False  # True once the broker answered a metadata request

    def count(self, topic: str) -> int:
        now = time.monotonic()
        if now >= self._next_refresh and self.backoff.waiting() == 0:
            self._next_refresh = now + self.config.discovery_interval_s
            try:
                if self._consumer is None:
                    self._consumer = self.config.consumer("tickerpulse-discovery")
                self._consumer.topics()  # a metadata request: new partitions show up
                for name in self.config.topics:
                    self._counts[name] = len(self._consumer.partitions_for_topic(name) or ())
                self.known = True
                self.backoff.succeeded()
            except KafkaError as exc:
                self.backoff.failed(exc)
                self.close()
        return self._counts.get(topic, 0)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None


def partition_slots(config: KafkaSourceConfig) -> list[Partition]:
    """One reader per partition that exists now, plus ``spare_partitions`` per topic for later;
    of those, the ones in this worker's share (``worker_index``, ``workers``).

    Why slots: the local FnApiRunner runs a stage only after the stage feeding it finished, so a
    discovery step chained in front of the readers would never hand them anything while
    streaming. A slot whose partition does not exist yet waits for it at no cost.
    """
    directory = PartitionDirectory(config)
    try:
        counts = {topic: directory.count(topic) for topic in config.topics}
    finally:
        directory.close()
    return [(topic, number) for topic, count in counts.items()
            for number in range(count + config.spare_partitions)
            if number % config.workers == config.worker_index]


def resume_offset(config: KafkaSourceConfig, partition: Partition, control: RunControl) -> int:
    """Committed offset, else the log start; waits out an unreachable broker with back-off."""
    tp = TopicPartition(*partition)
    backoff = Backoff(config.bootstrap_servers)
    while True:
        if control.stop_requested.is_set():
            return 0  # stopping before reading anything: the reader ends without consuming
        consumer = None
        try:
            consumer = config.consumer("tickerpulse-resume")
            committed = consumer.committed(tp)
            if committed is None:
                committed = consumer.beginning_offsets([tp])[tp]
            backoff.succeeded()
            return committed
        except KafkaError as exc:
            backoff.failed(exc)
            control.stop_requested.wait(backoff.waiting())
        finally:
            if consumer is not None:
                consumer.close(autocommit=False)


def _advance(watermark: ManualWatermarkEstimator, timestamp_s: float) -> None:
    """Event time of this partition so far (Kafka timestamps of one partition rarely go back)."""
    current = watermark.current_watermark()
    if current is None or Timestamp.of(timestamp_s) > current:
        watermark.set_watermark(Timestamp.of(timestamp_s))


class ReadPartition(beam.DoFn, RestrictionProvider):
    """(topic, partition) -> RawRecord, timestamped with the Kafka record time, forever.

    Its own restriction provider (it needs the config): a partition starts at the group's
    committed offset, else at its earliest offset.
    """

    def __init__(self, config: KafkaSourceConfig, session: SessionProvider) -> None:
        self.config = config
        self.session = session

    def _session(self) -> SourceSession:
        """This process's session, asked for once per DoFn instance (the restriction methods may
        run before ``setup``)."""
        if "_acquired" not in self.__dict__:
            self.__dict__["_acquired"] = self.session()
        return self.__dict__["_acquired"]

    def initial_restriction(self, partition: Partition) -> OffsetRange:
        """The runner may call this on a copy of the DoFn whose ``teardown`` never runs, so the
        directory's consumer is closed before returning; its counts stay cached for the next
        slot (``discovery_interval_s``)."""
        topic, number = partition[0], int(partition[1])
        directory = self.__dict__.get("_slot_directory")
        if directory is None:
            directory = self.__dict__["_slot_directory"] = PartitionDirectory(self.config)
        control = self._session().control
        try:
            # Until the broker answered, "no such partition" cannot be told from "no broker".
            while not directory.known and not control.stop_requested.is_set():
                directory.count(topic)
                if not directory.known:
                    control.stop_requested.wait(directory.backoff.waiting() or 0.1)
            exists = number < directory.count(topic)
        finally:
            directory.close()
        if exists:
            return OffsetRange(resume_offset(self.config, (topic, number), control), END)
        return OffsetRange(0, END)  # a partition added later starts empty, at offset 0

    def create_tracker(self, restriction: OffsetRange) -> _UnboundedOffsetTracker:
        return _UnboundedOffsetTracker(restriction)

    def restriction_size(self, partition: Partition, restriction: OffsetRange) -> int:
        return 1

    def split(self, partition: Partition, restriction: OffsetRange):
        yield restriction

    def setup(self) -> None:
        self._consumers: dict[Partition, KafkaConsumer] = {}
        self._next_health_check: dict[Partition, float] = {}
        self._backoff = Backoff(self.config.bootstrap_servers)
        self._directory = PartitionDirectory(self.config)

    @beam.DoFn.unbounded_per_element()
    def process(self, partition: Partition,
                tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        partition = (partition[0], int(partition[1]))
        session = self._session()
        control = session.control
        if control.should_end():
            tracker.try_claim(END)
            return
        if _wait_politely(self._backoff, self.config.poll_timeout_ms / 1000):
            control.note_outage()
            tracker.defer_remainder()
            return
        count = self._directory.count(partition[0])
        if partition[1] >= count:
            if count == 0:
                time.sleep(0.05)  # no reader of this topic blocks in poll: do not spin
            tracker.defer_remainder()  # not created (yet): this slot waits for it
            return
        start = tracker.current_restriction().start
        tp = TopicPartition(*partition)
        if partition not in self._consumers:
            log.info("reading Kafka partition %s/%d from offset %d", *partition, start)
        try:
            consumer = self._consumer(partition, start)
            records = consumer.poll(timeout_ms=self.config.poll_timeout_ms,
                                    max_records=self.config.max_records).get(tp, [])
            if not records:
                control.note_empty_poll(partition)
                self._check_health(partition, consumer)
        except KafkaError as exc:
            self._backoff.failed(exc)
            control.note_outage()
            self._drop_consumer(partition)
            tracker.defer_remainder()
            return
        ledger = session.ledger
        ledger.begin(partition, start)
        for record in records:
            if not tracker.try_claim(record.offset):
                return
            ledger.consumed(partition, record.offset, record.timestamp)
            yield TimestampedValue(
                RawRecord(raw=record.value if record.value is not None else b"",
                          location=f"{record.topic}/{record.partition}/{record.offset}",
                          kafka_topic=record.topic, kafka_partition=record.partition,
                          kafka_offset=record.offset, kafka_timestamp_ms=record.timestamp),
                record.timestamp / 1000.0)
        if records:
            _advance(watermark, records[-1].timestamp / 1000.0)
            control.note_records(partition, len(records))
            highwater = consumer.highwater(tp)
            if highwater is not None:
                control.lag[partition] = max(0, highwater - (records[-1].offset + 1))
        tracker.defer_remainder()

    def _consumer(self, partition: Partition, start: int) -> KafkaConsumer:
        consumer = self._consumers.get(partition)
        tp = TopicPartition(*partition)
        if consumer is None:
            consumer = self.config.consumer(f"tickerpulse-{partition[0]}-{partition[1]}")
            consumer.assign([tp])
            consumer.seek(tp, start)
            self._consumers[partition] = consumer
        return consumer

    def _check_health(self, partition: Partition, consumer: KafkaConsumer) -> None:
        """An empty poll may mean a dead broker (kafka-python retries silently): ask it."""
        now = time.monotonic()
        if now < self._next_health_check.get(partition, 0.0):
            return
        self._next_health_check[partition] = now + self.config.health_interval_s
        tp = TopicPartition(*partition)
        end = consumer.end_offsets([tp], timeout_ms=self.config.request_timeout_ms)[tp]
        self._session().control.lag[partition] = max(0, end - consumer.position(tp))
        self._backoff.succeeded()

    def _drop_consumer(self, partition: Partition) -> None:
        consumer = self._consumers.pop(partition, None)
        if consumer is not None:
            try:
                consumer.close(autocommit=False)
            except KafkaError:
                pass

    def teardown(self) -> None:
        for partition in list(self._consumers):
            self._drop_consumer(partition)
        self._directory.close()


class ReadFromKafka(beam.PTransform):
    """Every partition of ``config.topics`` as an unbounded PCollection of RawRecord; ``session``
    returns the worker process's :class:`SourceSession`."""

    def __init__(self, config: KafkaSourceConfig, session: SessionProvider) -> None:
        super().__init__()
        self.config = config
        self.session = session

    def expand(self, pbegin):
        return (pbegin
                | "Partitions" >> beam.Create(partition_slots(self.config))
                | "ReadPartitions" >> beam.ParDo(ReadPartition(self.config, self.session)).with_output_types(RawRecord))
