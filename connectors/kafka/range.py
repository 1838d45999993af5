"""A bounded read of Kafka topics between two times or offsets, with kafka-python (no Java).

``resolve_ranges`` turns ``--from``/``--to`` into one ``[start, end)`` offset range per partition
(times through ``offsets_for_times``); ``read_range`` reads one range. Records keep their topic,
partition, offset and timestamp, so a backfill and the streaming job agree on every item.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from kafka import KafkaConsumer, TopicPartition

from connectors.records import RawRecord

POLL_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class RangeBound:
    """``earliest``/``latest``, an offset (same for every partition) or a time (UTC)."""

    kind: str  # "earliest" | "latest" | "offset" | "time"
    offset: int | None = None
    time_ms: int | None = None


@dataclass(frozen=True)
class PartitionRange:
    topic: str
    partition: int
    start: int  # first offset read
    end: int  # first offset not read

    @property
    def size(self) -> int:
        return max(self.end - self.start, 0)


def parse_bound(text: str, default: str) -> RangeBound:
    """``earliest``, ``latest``, an integer offset, or an ISO-8601 date/time (UTC if no zone)."""
    text = (text or default).strip()
    if text in ("earliest", "latest"):
        return RangeBound(kind=text)
    if re.fullmatch(r"\d+", text):
        return RangeBound(kind="offset", offset=int(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a Kafka position: {text!r} (use earliest, latest, an offset, or an ISO-8601 time)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return RangeBound(kind="time", time_ms=int(moment.timestamp() * 1000))


def _consumer(bootstrap_servers: str, **config: object) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                         group_id=None, client_id="tickerpulse-backfill", **config)


def resolve_ranges(bootstrap_servers: str, topics: list[str], start: RangeBound, end: RangeBound,
                   timeout_s: float = 30.0) -> list[PartitionRange]:
    """Offsets for every partition of ``topics``; a topic that does not exist is an error."""
    consumer = _consumer(bootstrap_servers)
    try:
        partitions = [TopicPartition(topic, p) for topic in topics for p in sorted(_partitions(consumer, topic, timeout_s))]
        earliest = consumer.beginning_offsets(partitions)
        latest = consumer.end_offsets(partitions)
        starts = _offsets(consumer, start, partitions, earliest, latest)
        ends = _offsets(consumer, end, partitions, earliest, latest)
    finally:
        consumer.close()
    return [PartitionRange(tp.topic, tp.partition, starts[tp], max(ends[tp], starts[tp])) for tp in partitions]


def _partitions(consumer: KafkaConsumer, topic: str, timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return found
        if time.monotonic() > deadline:
            raise ValueError(f"Kafka topic {topic!r} not found")
        time.sleep(0.2)


def _offsets(consumer: KafkaConsumer, bound: RangeBound, partitions: list[TopicPartition],
             earliest: dict, latest: dict) -> dict[TopicPartition, int]:
    if bound.kind == "earliest":
        return dict(earliest)
    if bound.kind == "latest":
        return dict(latest)
    if bound.kind == "offset":
        return {tp: min(max(bound.offset, earliest[tp]), latest[tp]) for tp in partitions}
    # The first offset whose timestamp is >= the time; none such means "after the last record".
    found = consumer.offsets_for_times({tp: bound.time_ms for tp in partitions})
    return {tp: (found[tp].offset if found.get(tp) is not None else latest[tp]) for tp in partitions}


def read_range(bootstrap_servers: str, part: PartitionRange, idle_timeout_s: float = 60.0) -> Iterator[RawRecord]:
    """Every record of ``[start, end)`` of one partition; raises if the broker stops answering."""
    if part.size == 0:
        return
    tp = TopicPartition(part.topic, part.partition)
    consumer = _consumer(bootstrap_servers, max_poll_records=2000)
    try:
        consumer.assign([tp])
        consumer.seek(tp, part.start)
        last_progress = time.monotonic()
        while consumer.position(tp) < part.end:
            batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS).get(tp, [])
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_timeout_s:
                raise TimeoutError(f"no records from {part.topic}/{part.partition} at offset "
                                   f"{consumer.position(tp)} for {idle_timeout_s:.0f}s (range ends at {part.end})")
            for message in batch:
                if message.offset >= part.end:
                    return
                yield RawRecord(
                    raw=message.value if message.value is not None else b"",
                    location=f"{message.topic}/{message.partition}/{message.offset}",
                    kafka_topic=message.topic,
                    kafka_partition=message.partition,
                    kafka_offset=message.offset,
                    kafka_timestamp_ms=message.timestamp if message.timestamp is not None and message.timestamp >= 0 else None,
                )
    finally:
        consumer.close()
