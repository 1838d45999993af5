"""Topics on the embedded broker: kept forever by default, or for a bounded time on request."""
from __future__ import annotations

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.kafka.embedded import create_topics


def test_a_bounded_topic_drops_old_records_while_records_keep_arriving(kafka_broker):
    """Retention deletes closed segments only: without a segment roll, a topic written to without
    pause would keep everything (what a long benchmark on the embedded broker ran into)."""
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["kept"])
    create_topics(bootstrap, ["bounded"], retention_ms=2_000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    kept, bounded = TopicPartition("kept", 0), TopicPartition("bounded", 0)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for _ in range(20):
                for topic in ("kept", "bounded"):
                    producer.send(topic, b"x" * 100)
                time.sleep(0.01)
            producer.flush()
            if consumer.beginning_offsets([bounded])[bounded] > 0:
                break
        ends = consumer.end_offsets([kept, bounded])
        starts = consumer.beginning_offsets([kept, bounded])
        assert ends[bounded] == ends[kept] > 0
        assert starts[kept] == 0 and 0 < starts[bounded] < ends[bounded]
    finally:
        producer.close()
        consumer.close()
