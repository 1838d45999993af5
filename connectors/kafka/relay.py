"""Acknowledge a relayed record by where it came from: for a job that consumes a topic of records
derived from other topics (the store consumes the scoring workers' ``scored`` topic).

Each record on the relay topic names its origin (input topic, partition, offset), and the rows
the job writes keep that origin as their Kafka location. The job acknowledges rows by their
origin; :class:`RelayLedger` turns that into an acknowledgement of the relay record that carried
them in the job's own :class:`DeliveryLedger`, whose offsets the committer commits. An origin
carried twice (a worker replayed its input after a crash) is acknowledged once per copy, oldest
copy first. An acknowledgement of an origin no relay record carried is passed through unchanged
(a record the job refused itself has its relay location as origin).
"""
from __future__ import annotations

import threading
from collections import defaultdict, deque

from connectors.kafka.offsets import DeliveryLedger, Partition

Origin = tuple[str, int, int]  # (topic, partition, offset) of the record a relayed one came from


class RelayLedger:
    """``ack(origin partition, origin offset)`` acknowledges the relay record carrying it. Thread-safe."""

    def __init__(self, ledger: DeliveryLedger) -> None:
        self.ledger = ledger
        self._carriers: dict[Origin, deque[tuple[Partition, int]]] = defaultdict(deque)
        self._lock = threading.Lock()

    def carried(self, origin: Origin, partition: Partition, offset: int) -> None:
        """The relay record at ``partition``/``offset`` (consumed, in ``ledger``) carries ``origin``."""
        with self._lock:
            self._carriers[origin].append((partition, offset))

    def ack(self, partition: Partition, offset: int) -> int | None:
        """Acknowledge the oldest relay record carrying this origin; returns its Kafka timestamp (ms)."""
        origin = (partition[0], partition[1], offset)
        with self._lock:
            carriers = self._carriers.get(origin)
            if carriers:
                partition, offset = carriers.popleft()
                if not carriers:
                    del self._carriers[origin]
        return self.ledger.ack(partition, offset)

    def pending_count(self) -> int:
        """Relayed origins not acknowledged yet."""
        with self._lock:
            return sum(map(len, self._carriers.values()))
