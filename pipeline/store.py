"""``tickerpulse stream --role store``: the one store process of the scale-out (docs/architecture.md).

    python run_pipeline.py stream --role store --bootstrap-servers localhost:9092 \\
        --topics scored --points-topic points --group-id tickerpulse-store --db pulse.duckdb

It is the single-process stream without the scoring: the scored topic's items go through the same
stages (one per id, novelty, relevance, the per-ticker state folded and written with the points
in one transaction, ``pipeline.graph.land``), the workers' dead letters are written, and
every point a write stores is then published to the points topic. A scored record is
acknowledged by its item's or dead letter's origin (connectors.kafka.relay), so its offset is
committed only after that write and that publish. On restart it rebuilds its state from DuckDB
like the stream, and publishes every point it recomputed.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam

from connectors.duckdb.sink import REOPEN_AFTER_S, DuckDBSink
from connectors.kafka.offsets import DeliveryLedger
from connectors.kafka.producer import Publisher
from connectors.kafka.relay import RelayLedger
from connectors.kafka.source import KafkaSourceConfig, ReadFromKafka
from connectors.records import DeadLetter, Item, RawRecord
from pipeline.run_handle import RunDoFn, RunHandle
from pipeline.scored_topic import decode_scored, encode_points
from pipeline.graph import land
from pipeline.stream_transforms import StreamMode, StreamRun, StreamSettings
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


@dataclass(frozen=True)
class StoreSettings(StreamSettings):
    """The stream's settings, with the points topic that every stored point is published to."""

    points_topic: str = "points"

    def open_sink(self) -> DuckDBSink:
        points = Publisher(self.observing.bootstrap_servers, self.points_topic, client_id="tickerpulse-points")
        return PublishingSink(self.db, points, snapshot_interval_s=self.snapshot_interval_s,
                              memory_limit=self.memory_limit, reopen_after_s=REOPEN_AFTER_S)

    def acks(self, ledger: DeliveryLedger) -> RelayLedger:
        """A scored record is acknowledged by the origin of the item or dead letter it carries."""
        return RelayLedger(ledger)


class _DecodeFn(RunDoFn):
    def process(self, record: RawRecord) -> Iterator[Item | beam.pvalue.TaggedOutput]:
        result = decode_scored(record)
        origin = (result.kafka_topic, result.kafka_partition, result.kafka_offset)
        if origin != (record.kafka_topic, record.kafka_partition, record.kafka_offset):
            self.shared_run.acks.carried(origin, (record.kafka_topic, record.kafka_partition),
                                                   record.kafka_offset)
        yield beam.pvalue.TaggedOutput(DEAD, result) if isinstance(result, DeadLetter) else result


class DecodeScored(beam.PTransform):
    """Scored-topic records -> Item (main) | DeadLetter (``dead``: the workers' and unreadable messages)."""

    def __init__(self, handle: RunHandle[StreamRun]) -> None:
        super().__init__()
        self.handle = handle

    def expand(self, records):
        return records | "Decode" >> beam.ParDo(_DecodeFn(self.handle)).with_outputs(DEAD, main="items")


def build(pipeline: beam.Pipeline, source: KafkaSourceConfig, handle: RunHandle[StreamRun]) -> None:
    """The store's graph: the stream's stages over the scored topic, without linking or scoring."""
    decoded = pipeline | "Read Kafka" >> ReadFromKafka(source, handle) | "Decode scored" >> DecodeScored(handle)
    land(decoded.items, StreamMode(handle), dead_letters={"decode": decoded[DEAD]})
