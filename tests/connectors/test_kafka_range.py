"""Bounded Kafka range reads against a real local broker (noida-db), and a range backfill."""
from __future__ import annotations

import json
import time

import duckdb
import pytest
from kafka import KafkaProducer

from connectors.kafka.embedded import create_topics
from connectors.kafka.range import parse_bound, read_range, resolve_ranges
from pipeline import backfill

T0 = 1714550400000  # 2024-05-01T08:00Z


def produce(bootstrap: str, topic: str, records: list[tuple[int, int, bytes]]) -> None:
    """(partition, timestamp_ms, value) in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for partition, ts, value in records:
            producer.send(topic, value=value, partition=partition, timestamp_ms=ts)
        producer.flush()
    finally:
        producer.close()


@pytest.fixture
def news(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    create_topics(bootstrap, ["news"], partitions=2)
    records = []
    for i in range(10):  # partition i % 2, one minute apart
        body = {"id": f"k{i}", "text": f"$AAPL headline number {i} beats", "source": "news"}
        if i == 3:
            body.pop("id")  # no id, no published_at: the Kafka timestamp is the event time
        records.append((i % 2, T0 + i * 60_000, json.dumps(body).encode()))
    records.append((0, T0 + 10 * 60_000, b"not json at all"))
    produce(bootstrap, "news", records)
    return bootstrap


def test_parse_bound():
    assert parse_bound("", "earliest").kind == "earliest"
    assert parse_bound("42", "latest").offset == 42
    assert parse_bound("2024-05-01T08:00", "latest").time_ms == T0
    with pytest.raises(ValueError, match="not a Kafka position"):
        parse_bound("tomorrow", "latest")


def test_time_range_uses_offsets_for_times_per_partition(news):
    ranges = resolve_ranges(news, ["news"], parse_bound("2024-05-01T08:02:00Z", ""), parse_bound("2024-05-01T08:07:00Z", ""))
    by_partition = {r.partition: r for r in ranges}
    # partition 0 holds minutes 0,2,4,6,8,10 -> [2, 6] is offsets 1..3; partition 1 holds 1,3,5,7,9 -> 3,5 is offsets 1..2
    assert (by_partition[0].start, by_partition[0].end) == (1, 4)
    assert (by_partition[1].start, by_partition[1].end) == (1, 3)
    records = [rec for r in ranges for rec in read_range(news, r)]
    assert sorted(r.kafka_timestamp_ms for r in records) == [T0 + m * 60_000 for m in range(2, 7)]
    assert all(r.location == f"news/{r.kafka_partition}/{r.kafka_offset}" for r in records)


def test_offset_range_and_missing_topic(news):
    ranges = resolve_ranges(news, ["news"], parse_bound("2", ""), parse_bound("latest", ""))
    assert sorted((r.partition, r.start, r.end) for r in ranges) == [(0, 2, 6), (1, 2, 5)]
    with pytest.raises(ValueError, match="not found"):
        resolve_ranges(news, ["nope"], parse_bound("earliest", ""), parse_bound("latest", ""), timeout_s=1)


def test_kafka_range_backfill_into_duckdb(news, tmp_path, capsys):
    db = str(tmp_path / "kafka.duckdb")
    argv = ["--kafka-bootstrap", news, "--topics", "news", "--from", "earliest", "--to", "latest", "--db", db]
    assert backfill.run(argv) == 0
    assert "read 11, scored 10, dead-lettered 1, duplicates 0" in capsys.readouterr().out
    produce(news, "news", [(1, T0 + 20 * 60_000, json.dumps({"id": "late", "text": "$AAPL later", "source": "news"}).encode())])
    con = duckdb.connect(db, read_only=True)
    try:
        rows = con.execute("SELECT id, kafka_topic, kafka_partition, kafka_offset, epoch_ms(ts) FROM items ORDER BY ALL").fetchall()
        dead = con.execute("SELECT raw, kafka_topic, kafka_partition, kafka_offset, source_location FROM dead_letters").fetchall()
    finally:
        con.close()
    assert len(rows) == 10 and all(r[1] == "news" and r[2] in (0, 1) for r in rows)
    no_id = [r for r in rows if r[0].startswith("sha256:")]
    assert len(no_id) == 1 and no_id[0][4] == T0 + 3 * 60_000 and no_id[0][2:4] == (1, 1)
    assert dead == [(b"not json at all", "news", 0, 5, "news/0/5")]
    # A second run over a later range adds only the new record.
    time.sleep(0.1)
    assert backfill.run(["--kafka-bootstrap", news, "--topics", "news", "--from", "2024-05-01T08:15", "--db", db]) == 0
    assert "read 1, scored 1" in capsys.readouterr().out
    con = duckdb.connect(db, read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 11
    finally:
        con.close()
