"""Topics on the embedded broker: kept forever by default, or for a bounded time on request."""
from __future__ import annotations

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.kafka.embedded import create_topics


def test_topics_keep_every_record_unless_given_a_retention(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["kept"])
    create_topics(bootstrap, ["bounded"], retention_ms=2_000)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for topic in ("kept", "bounded"):
        for value in (b"first", b"second"):
            producer.send(topic, value)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    kept, bounded = TopicPartition("kept", 0), TopicPartition("bounded", 0)
    try:
        deadline = time.monotonic() + 60
        while consumer.beginning_offsets([bounded])[bounded] < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert consumer.beginning_offsets([bounded, kept]) == {bounded: 2, kept: 0}
        assert consumer.end_offsets([bounded, kept]) == {bounded: 2, kept: 2}
    finally:
        consumer.close()
