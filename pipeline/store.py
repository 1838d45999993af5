"""``tickerpulse stream --role store``: the one store process of the scale-out (docs/architecture.md).

    python run_pipeline.py stream --role store --bootstrap-servers localhost:9092 \\
        --topics scored --points-topic points --group-id tickerpulse-store --db pulse.duckdb

It is the single-process stream without the scoring: the scored topic's items go through the same
stages (one per id, novelty, relevance, the per-ticker state folded and written with the points
in one transaction, ``pipeline.stream_graph.land``), the workers' dead letters are written, and
every point a write stores is then published to the points topic. A scored record is
acknowledged by its item's or dead letter's origin (connectors.kafka.relay), so its offset is
committed only after that write and that publish. On restart it rebuilds its state from DuckDB
like the stream, and publishes every point it recomputed.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

import apache_beam as beam

from connectors.duckdb.sink import DuckDBSink
from connectors.kafka.producer import Publisher
from connectors.kafka.source import KafkaSourceConfig, ReadFromKafka
from pipeline.records import DeadLetter, Item, RawRecord
from pipeline.scored_topic import decode_scored, encode_points
from pipeline.stream_graph import land
from pipeline.stream_transforms import WriteStream, stream_run
from pipeline.tickers import Linking
from pipeline.transforms import DEAD


class PublishingSink(DuckDBSink):
    """The DuckDB writer that, after each durable write, publishes the points it stored (the
    last version of each) and returns only once the broker acknowledged them."""

    def __init__(self, db_path: str, points: Publisher, **options: object) -> None:
        super().__init__(db_path, **options)
        self.points = points

    def write(self, items: Sequence[Item] = (), dead_letters: Sequence[DeadLetter] = (),
              points: Sequence[object] = ()) -> dict[str, int]:
        written = super().write(items, dead_letters, points)
        self.points.publish(encode_points(points))
        return written

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.points.close()


class _DecodeFn(beam.DoFn):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def process(self, record: RawRecord) -> Iterator[Item | beam.pvalue.TaggedOutput]:
        result = decode_scored(record)
        origin = (result.kafka_topic, result.kafka_partition, result.kafka_offset)
        if origin != (record.kafka_topic, record.kafka_partition, record.kafka_offset):
            stream_run(self.run_id).ledger.carried(origin, (record.kafka_topic, record.kafka_partition),
                                                   record.kafka_offset)
        yield beam.pvalue.TaggedOutput(DEAD, result) if isinstance(result, DeadLetter) else result


class DecodeScored(beam.PTransform):
    """Scored-topic records -> Item (main) | DeadLetter (``dead``: the workers' and unreadable messages)."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def expand(self, records):
        return records | "Decode" >> beam.ParDo(_DecodeFn(self.run_id)).with_outputs(DEAD, main="items")


def build(pipeline: beam.Pipeline, args: argparse.Namespace, source: KafkaSourceConfig, links: Linking) -> None:
    """The store's graph (the stream's signature; it scores and links nothing)."""
    run_id = source.run_id
    decoded = pipeline | "Read Kafka" >> ReadFromKafka(source) | "Decode scored" >> DecodeScored(run_id)
    land(decoded.items, run_id)
    _ = decoded[DEAD] | "Write dead letters" >> WriteStream(run_id, "dead_letters")
