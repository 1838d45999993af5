"""Publish records to a Kafka topic and know they are durable there: acks=all, then flush.

What the scoring workers and the store use to write their topics. ``publish`` returns only once
the broker has acknowledged every record of the batch (all in-sync replicas), so a caller may
then commit the input offsets those records came from. One request in flight per connection: a
retried batch cannot overtake a later one, so records of one key stay in the order sent (the
points topic relies on it: the last value per key is the current one).

A broker that lost a producer's state (a restart does it to the embedded broker; Kafka does it
once it expired an idle producer's state) fails that producer's in-flight records with a
producer-state error, which the producer does not retry. ``publish`` then sends the whole batch
again, in order, from a new producer: records acknowledged before the error arrive twice, which the readers of both topics
absorb (the store lands an item id once; a points reader keeps the last value per key), and the
last record per key is still the newest.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.errors import (InvalidProducerEpochError, KafkaError, OutOfOrderSequenceNumberError,
                          UnknownProducerIdError)

from connectors.kafka import RECONNECT

log = logging.getLogger(__name__)

KeyValue = tuple[bytes, bytes]
PRODUCER_STATE_ERRORS = (OutOfOrderSequenceNumberError, UnknownProducerIdError, InvalidProducerEpochError)


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
                            request_timeout_ms=min(30_000, timeout_ms - linger_ms - 1), **RECONNECT)
        self._timeout_s = timeout_ms / 1000
        self._producer: KafkaProducer | None = None

    def publish(self, records: Sequence[KeyValue]) -> None:
        """Send every (key, value) and wait until the broker acknowledged all of them.

        Raises ``PublishError`` when one was not acknowledged (the producer retried until the
        timeout): the caller must then not commit the offsets the records stand for.
        """
        if not records:
            return
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                self._send_all(records)
                return
            except PRODUCER_STATE_ERRORS as exc:
                self.close()
                if time.monotonic() >= deadline:
                    raise self._error(exc) from exc
                log.warning("the broker lost the state of the producer to %r (%s): sending the %d "
                            "records again from a new producer", self.topic, type(exc).__name__, len(records))
            except KafkaError as exc:
                self.close()
                raise self._error(exc) from exc

    def _send_all(self, records: Sequence[KeyValue]) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(**self._config)
        futures = [self._producer.send(self.topic, key=key, value=value) for key, value in records]
        self._producer.flush()
        for future in futures:
            future.get(timeout=0)

    def _error(self, exc: KafkaError) -> PublishError:
        return PublishError(f"publishing to {self.topic!r} failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except KafkaError:
                pass
            self._producer = None
