"""The scale-out's Kafka parts: the acknowledged publisher (real broker) and the relay ledger."""
from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition

from connectors.kafka.embedded import create_topics, free_port
from connectors.kafka.offsets import DeliveryLedger
from connectors.kafka.producer import Publisher, PublishError
from connectors.kafka.relay import RelayLedger


def test_published_records_are_on_the_topic_when_publish_returns(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["out"], partitions=2)
    publisher = Publisher(bootstrap, "out")
    records = [(f"k{i % 3}".encode(), f"v{i}".encode()) for i in range(30)]
    try:
        publisher.publish(records[:10])
        publisher.publish(records[10:])
    finally:
        publisher.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
    tps = [TopicPartition("out", p) for p in range(2)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = [(m.key, m.value) for m in consumer]
    consumer.close()
    assert sorted(got) == sorted(records)
    for key in {k for k, _ in records}:  # one key: one partition, in the order published
        assert [v for k, v in got if k == key] == [v for k, v in records if k == key]


def test_an_unreachable_broker_is_a_publish_error_not_a_silent_loss():
    publisher = Publisher(f"127.0.0.1:{free_port()}", "out", timeout_ms=2000)
    with pytest.raises(PublishError, match="publishing to 'out' failed"):
        publisher.publish([(b"k", b"v")])
    publisher.close()


def test_relay_acknowledges_the_record_that_carried_an_origin():
    ledger = DeliveryLedger()
    scored = ("scored", 0)
    ledger.begin(scored, 0)
    for offset in range(4):
        ledger.consumed(scored, offset, 100 + offset)
    relay = RelayLedger(ledger)
    relay.carried(("news", 1, 7), scored, 0)
    relay.carried(("news", 0, 3), scored, 1)
    relay.carried(("news", 1, 7), scored, 2)  # a worker replayed news/1/7: a second copy
    assert relay.ack(("news", 0), 3) == 101  # by origin: the scored record at offset 1
    assert ledger.committable() == {scored: 0}
    assert relay.ack(("news", 1), 7) == 100  # the oldest copy first
    assert ledger.committable() == {scored: 2}
    assert relay.ack(("news", 1), 7) == 102
    assert relay.ack(scored, 3) == 103  # no record carried it: the scored record itself
    assert ledger.committable() == {scored: 4} and relay.pending_count() == 0
