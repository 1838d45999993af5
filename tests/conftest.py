"""Shared fixtures: real parts only (a Kafka-protocol broker, DuckDB files, model weights)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.kafka.embedded import EmbeddedBroker


@pytest.fixture
def kafka_broker(tmp_path) -> Iterator[EmbeddedBroker]:
    """A real local Kafka-protocol broker (noida-db). Failing to start it fails the test."""
    broker = EmbeddedBroker(data_dir=tmp_path / "kafka").start()
    try:
        yield broker
    finally:
        broker.stop()
