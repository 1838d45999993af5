"""Commit Kafka consumer-group offsets only once the rows they cover are durable in DuckDB.

The source records every offset it hands to the pipeline (``consumed``); the sink acknowledges
an offset once its item or dead letter is written, and the dedupe step once it dropped a
duplicate (``ack``). The offset that may be committed for a partition is the oldest offset still
unacknowledged, or one past the last consumed when none is pending: a contiguous prefix of what
was read, so gaps in the log (compaction, transaction markers) never stall it, and a crash at
any point replays exactly the records whose rows might be missing.

The ledger lives in the worker process that runs both the source and the sink (their steps fuse
into one stage: no grouping between them); the job hands the same ledger to both.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from connectors.kafka import RECONNECT

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition): picklable and hashable


@dataclass
class _PartitionLedger:
    next_offset: int  # one past the last consumed offset
    pending: dict[int, int | None] = field(default_factory=dict)  # offset -> Kafka timestamp ms
    order: deque[int] = field(default_factory=deque)  # consumed offsets, oldest first

    def committable(self) -> int:
        while self.order and self.order[0] not in self.pending:
            self.order.popleft()
        return self.order[0] if self.order else self.next_offset


class DeliveryLedger:
    """Per partition: which consumed offsets are not yet durable. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[Partition, _PartitionLedger] = {}
        self._committed: dict[Partition, int] = {}

    def begin(self, partition: Partition, start_offset: int) -> None:
        """The source starts reading ``partition`` at ``start_offset`` (its resume point)."""
        with self._lock:
            self._partitions.setdefault(partition, _PartitionLedger(next_offset=start_offset))

    def consumed(self, partition: Partition, offset: int, timestamp_ms: int | None = None) -> None:
        with self._lock:
            ledger = self._partitions.setdefault(partition, _PartitionLedger(next_offset=offset))
            ledger.pending[offset] = timestamp_ms
            ledger.order.append(offset)
            ledger.next_offset = max(ledger.next_offset, offset + 1)

    def ack(self, partition: Partition, offset: int) -> int | None:
        """Mark ``offset`` durable (or deliberately dropped); returns its Kafka timestamp in ms."""
        with self._lock:
            ledger = self._partitions.get(partition)
            if ledger is None:
                return None
            return ledger.pending.pop(offset, None)

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(p.pending) for p in self._partitions.values())

    def committable(self) -> dict[Partition, int]:
        """The offset to commit per partition (Kafka's convention: the next record to read)."""
        with self._lock:
            return {partition: ledger.committable() for partition, ledger in self._partitions.items()}

    def uncommitted(self) -> dict[Partition, int]:
        """Committable offsets that differ from the last ones marked committed."""
        with self._lock:
            current = {p: ledger.committable() for p, ledger in self._partitions.items()}
            return {p: o for p, o in current.items() if self._committed.get(p) != o}

    def mark_committed(self, offsets: dict[Partition, int]) -> None:
        with self._lock:
            self._committed.update(offsets)


class OffsetCommitter:
    """Commits a ledger's durable prefix to the consumer group, at most every ``interval_s``.

    A failed commit is logged and retried at the next call: offsets only move forward once the
    broker accepted them, and an uncommitted offset only means a replay that the idempotent sink
    absorbs. ``before_commit`` runs right before each commit is sent (the streaming job checks
    there that its DuckDB file is still the one it wrote); whatever it raises, nothing is sent.
    """

    def __init__(self, bootstrap_servers: str, group_id: str, ledger: DeliveryLedger,
                 interval_s: float = 1.0, timeout_ms: int = 5000,
                 before_commit: Callable[[], None] | None = None, **consumer_config: object) -> None:
        self._config = dict(bootstrap_servers=bootstrap_servers, group_id=group_id,
                            enable_auto_commit=False, client_id="tickerpulse-committer",
                            **RECONNECT, **consumer_config)
        self.group_id = group_id
        self.ledger = ledger
        self.interval_s = interval_s
        self.timeout_ms = timeout_ms  # a commit never blocks the writer longer than this
        self.before_commit = before_commit
        self._consumer: KafkaConsumer | None = None
        self._last_commit = float("-inf")

    def maybe_commit(self) -> dict[Partition, int]:
        if time.monotonic() - self._last_commit < self.interval_s:
            return {}
        return self.commit()

    def commit(self) -> dict[Partition, int]:
        """Commit what is durable and not yet committed; returns what was committed."""
        self._last_commit = time.monotonic()
        offsets = self.ledger.uncommitted()
        if not offsets:
            return {}
        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(**self._config)
            if self.before_commit is not None:
                self.before_commit()  # after connecting: as close to the send as it gets
            self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                   for (t, p), o in offsets.items()}, timeout_ms=self.timeout_ms)
        except KafkaError as exc:
            log.warning("offset commit for group %r failed (%s: %s); retrying at the next flush",
                        self.group_id, type(exc).__name__, exc)
            self.close()
            return {}
        self.ledger.mark_committed(offsets)
        return offsets

    def close(self) -> None:
        _close_quietly(self._consumer)
        self._consumer = None


class BrokerLag:
    """The consumer group's lag as the broker sees it: over every partition of the topics, the end
    offset minus the group's committed offset (the beginning offset when none is committed).

    Asked every ``interval_s`` from a daemon thread of its own (a dead broker blocks that thread,
    not the writer); ``value`` is the last measurement. The source's own per-partition view only
    knows the partitions it polled lately, and not those it has not reached in a backlog.
    """

    def __init__(self, bootstrap_servers: str, group_id: str, topics: tuple[str, ...],
                 interval_s: float = 5.0, timeout_ms: int = 5000) -> None:
        self._config = dict(bootstrap_servers=bootstrap_servers, group_id=group_id,
                            enable_auto_commit=False, client_id="tickerpulse-lag",
                            request_timeout_ms=max(timeout_ms, 1000) + 500, **RECONNECT)
        self.topics = topics
        self.interval_s = interval_s
        self.timeout_ms = timeout_ms
        self.value = 0
        self._consumer: KafkaConsumer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tickerpulse-lag", daemon=True)

    def refresh(self) -> int | None:
        """Measure now; returns the lag, or None (the last value stays) if the broker did not answer."""
        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(**self._config)
            consumer = self._consumer
            tps = [TopicPartition(topic, p) for topic in self.topics
                   for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                self.value = 0
                return 0
            ends = consumer.end_offsets(tps, timeout_ms=self.timeout_ms)
            starts = consumer.beginning_offsets(tps, timeout_ms=self.timeout_ms)
            lag = 0
            for tp in tps:
                committed = consumer.committed(tp)
                lag += max(0, ends[tp] - (starts[tp] if committed is None else committed))
        except KafkaError:
            self.close()
            return None
        self.value = lag
        return lag

    def start(self) -> "BrokerLag":
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        """Stop the thread (``refresh`` still works; ``close`` releases the connection)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + self.timeout_ms / 1000 + 1)

    def close(self) -> None:
        _close_quietly(self._consumer)
        self._consumer = None


def _close_quietly(consumer: KafkaConsumer | None) -> None:
    """Close a consumer whose broker may be gone; nothing is committed on the way out."""
    if consumer is not None:
        try:
            consumer.close(autocommit=False)
        except KafkaError:
            pass


def committed_offsets(bootstrap_servers: str, group_id: str,
                      partitions: list[Partition]) -> dict[Partition, int | None]:
    """The group's committed offset per partition (None: nothing committed yet)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id,
                             enable_auto_commit=False, client_id="tickerpulse-offsets")
    try:
        return {(t, p): consumer.committed(TopicPartition(t, p)) for t, p in partitions}
    finally:
        consumer.close(autocommit=False)
