"""``tickerpulse stream --role score``: a scoring worker of the scale-out (docs/architecture.md).

    python run_pipeline.py stream --role score --worker-index 0 --workers 2 \\
        --bootstrap-servers localhost:9092 --topics news comments --scored-topic scored

Reads its share of the input partitions (partition p of each topic when p % workers ==
worker-index), parses, links tickers, scores, and publishes every scored item and every dead
letter to the scored topic (pipeline.scored_topic). Its input offsets are committed only once the
broker has acknowledged the records they became (acks=all, flushed), so a crash replays at most
the records whose messages might be missing; the store drops the copies by id. Novelty,
relevance and the points need every item: the store computes them.
"""
from __future__ import annotations

import argparse
import functools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.shared import Shared

from connectors.kafka.offsets import BrokerLag, DeliveryLedger, OffsetCommitter, forget_ledger, ledger_for
from connectors.kafka.producer import Publisher
from connectors.kafka.source import KafkaSourceConfig, ReadFromKafka, forget_run, run_control
from pipeline.metrics import StreamMetrics
from pipeline.records import DeadLetter, Item
from pipeline.scored_topic import encode_dead_letter, encode_item
from pipeline.scoring import SentimentModelHandler
from pipeline.stream import make_pipeline, observed, stop_on_signals
from pipeline.stream_graph import parse_and_link
from pipeline.tickers import Linking
from pipeline.transforms import DEAD, Score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to open its publisher and committer; picklable."""

    bootstrap_servers: str
    group_id: str
    scored_topic: str
    run_id: str


class ScoreRun:
    """One scoring worker's shared parts in its process: the publisher and what follows a publish.

    ``publish`` is the durability point: messages acknowledged by the broker, then their input
    offsets acknowledged in the ledger, then (throttled) the consumer-group commit.
    """

    def __init__(self, publisher: Publisher, ledger: DeliveryLedger, committer: OffsetCommitter,
                 metrics: StreamMetrics) -> None:
        self.publisher = publisher
        self.ledger = ledger
        self.committer = committer
        self.metrics = metrics
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: WorkerSettings, metrics: StreamMetrics | None = None) -> "ScoreRun":
        ledger = ledger_for(settings.run_id)
        return cls(Publisher(settings.bootstrap_servers, settings.scored_topic, client_id="tickerpulse-scored"),
                   ledger, OffsetCommitter(settings.bootstrap_servers, settings.group_id, ledger),
                   metrics or StreamMetrics())

    def publish(self, items: Sequence[Item] = (), dead_letters: Sequence[DeadLetter] = ()) -> None:
        with self._lock:
            self.publisher.publish([encode_item(item) for item in items]
                                   + [encode_dead_letter(dead) for dead in dead_letters])
            now_ms = time.time() * 1000
            for record in (*items, *dead_letters):
                produced_ms = self.ledger.ack((record.kafka_topic, record.kafka_partition), record.kafka_offset)
                if produced_ms is not None and produced_ms >= 0:
                    self.metrics.observe_latency(max(0.0, now_ms - produced_ms) / 1000)
            self.metrics.add(scored=len(items), dead_lettered=len(dead_letters))
            self.committer.maybe_commit()

    def commit_due(self) -> None:
        with self._lock:
            self.committer.maybe_commit()

    def close(self) -> None:
        with self._lock:
            self.committer.commit()
            self.committer.close()
            self.publisher.close()


class _PublishFn(beam.DoFn):
    """Publishes a bundle's records of one kind at its end (bundles are one poll of one partition)."""

    def __init__(self, shared: Shared, settings: WorkerSettings, kind: str) -> None:
        self._shared = shared
        self._settings = settings
        self._kind = kind

    def setup(self) -> None:
        # In the job's process this is the run that ``run_worker`` opened; elsewhere one per process.
        self._run = self._shared.acquire(functools.partial(ScoreRun.open, self._settings), tag=self._settings.run_id)

    def start_bundle(self) -> None:
        self._rows: list = []

    def process(self, row: Item | DeadLetter) -> None:
        self._rows.append(row)

    def finish_bundle(self) -> None:
        if self._rows:
            self._run.publish(**{self._kind: self._rows})
        self._rows = []


class PublishScored(beam.PTransform):
    """Scored items or dead letters -> the scored topic; their input offsets become committable."""

    KINDS = ("items", "dead_letters")

    def __init__(self, shared: Shared, settings: WorkerSettings, kind: str) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {self.KINDS}")
        self._fn = _PublishFn(shared, settings, kind)

    def expand(self, rows):
        return rows | "Publish" >> beam.ParDo(self._fn)


def build(pipeline: beam.Pipeline, args: argparse.Namespace, source: KafkaSourceConfig, links: Linking,
          shared: Shared, settings: WorkerSettings) -> None:
    """The worker's graph: the stream's first stages, then publish (fuses into one stage locally)."""
    items, parse_dead = parse_and_link(pipeline | "Read Kafka" >> ReadFromKafka(source), links)
    handler = SentimentModelHandler(args.model, args.device, args.precision, batch_size=args.batch_size)
    scored = items | "Score" >> Score(handler)
    _ = scored["items"] | "Publish scored items" >> PublishScored(shared, settings, "items")
    _ = parse_dead | "Publish parse dead letters" >> PublishScored(shared, settings, "dead_letters")
    _ = scored[DEAD] | "Publish score dead letters" >> PublishScored(shared, settings, "dead_letters")


def run_worker(args: argparse.Namespace, options: PipelineOptions, links: Linking) -> StreamMetrics:
    """Run one scoring worker until stopped (or idle, with --until-idle); returns its counters."""
    run_id = f"score-{uuid.uuid4()}"
    source = KafkaSourceConfig(args.bootstrap_servers, args.group_id, tuple(args.topics), run_id,
                               until_idle_s=args.until_idle, max_records=args.max_poll_records,
                               spare_partitions=args.spare_partitions, worker_index=args.worker_index,
                               workers=args.workers)
    control = run_control(run_id, args.until_idle)
    broker_lag = BrokerLag(args.bootstrap_servers, args.group_id, tuple(args.topics))
    metrics = StreamMetrics(consumed=lambda: control.consumed, lag=lambda: broker_lag.value)
    settings = WorkerSettings(args.bootstrap_servers, args.group_id, args.scored_topic, run_id)
    shared = Shared()
    worker = shared.acquire(lambda: ScoreRun.open(settings, metrics), tag=run_id)  # held until the end
    log.info("scoring worker %d of %d: partitions p %% %d == %d of %s -> %s", args.worker_index, args.workers,
             args.workers, args.worker_index, ", ".join(args.topics), args.scored_topic)
    try:
        # close: the final commit of what the broker acknowledged
        with observed(args, metrics, broker_lag, every_second=worker.commit_due, close=worker.close), \
                stop_on_signals(control):
            pipeline = make_pipeline(options)
            build(pipeline, args, source, links, shared, settings)
            pipeline.run().wait_until_finish()
    finally:
        forget_ledger(run_id)
        forget_run(run_id)
    log.info(metrics.line())
    return metrics
