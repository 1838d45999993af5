"""Publish records to a Kafka topic and know they are durable there: acks=all, then flush.

What the scoring workers and the store use to write their topics. ``publish`` returns only once
the broker has acknowledged every record of the batch (all in-sync replicas), so a caller may
then commit the input offsets those records came from. One request in flight per connection: a
retried batch cannot overtake a later one, so records of one key stay in the order sent (the
points topic relies on it: the last value per key is the current one).
"""
from __future__ import annotations

from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError

KeyValue = tuple[bytes, bytes]


class PublishError(Exception):
    """The broker did not acknowledge every record of a batch within the timeout."""


class Publisher:
    """One topic's producer; connects on the first ``publish``. Not thread-safe: one caller at a time."""

    def __init__(self, bootstrap_servers: str, topic: str, client_id: str = "tickerpulse-publisher",
                 timeout_ms: int = 120_000, linger_ms: int = 5) -> None:
        """``timeout_ms``: how long a record may wait for the broker (connecting, metadata, retries)."""
        self.topic = topic
        self._config = dict(bootstrap_servers=bootstrap_servers, client_id=client_id, acks="all",
                            max_in_flight_requests_per_connection=1, linger_ms=linger_ms,
                            delivery_timeout_ms=timeout_ms, max_block_ms=timeout_ms,
                            bootstrap_timeout_ms=min(30_000, timeout_ms),
                            request_timeout_ms=min(30_000, timeout_ms - linger_ms - 1))
        self._producer: KafkaProducer | None = None

    def publish(self, records: Sequence[KeyValue]) -> None:
        """Send every (key, value) and wait until the broker acknowledged all of them.

        Raises ``PublishError`` when one was not acknowledged (the producer retried until the
        timeout): the caller must then not commit the offsets the records stand for.
        """
        if not records:
            return
        try:
            if self._producer is None:
                self._producer = KafkaProducer(**self._config)
            futures = [self._producer.send(self.topic, key=key, value=value) for key, value in records]
            self._producer.flush()
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            self.close()
            raise PublishError(f"publishing to {self.topic!r} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except KafkaError:
                pass
            self._producer = None
