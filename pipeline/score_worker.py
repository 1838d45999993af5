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

from connectors.kafka.offsets import DeliveryLedger, OffsetCommitter
from connectors.kafka.producer import Publisher
from connectors.kafka.source import KafkaSourceConfig, ReadFromKafka, RunControl
from connectors.records import DeadLetter, Item
from pipeline.metrics import StreamMetrics, WorkerCounts
from pipeline.run_handle import Observers, Observing, RunDoFn, RunHandle, SharedRun
from pipeline.scored_topic import encode_dead_letter, encode_item
from pipeline.scoring import SentimentModelHandler
from pipeline.stream import observing, run_job
from pipeline.graph import parse_and_link
from pipeline.tickers import Linking
from pipeline.transforms import DEAD, Score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to open its :class:`ScoreRun`; picklable."""

    observing: Observing
    scored_topic: str
    until_idle_s: float | None = None


class ScoreRun(SharedRun):
    """One scoring worker's shared parts in its process: the publisher and what follows a publish.

    ``publish`` is the durability point: messages acknowledged by the broker, then their input
    offsets acknowledged in the ledger, then (throttled) the consumer-group commit.
    """

    def __init__(self, publisher: Publisher, ledger: DeliveryLedger, committer: OffsetCommitter,
                 metrics: StreamMetrics, control: RunControl) -> None:
        super().__init__()
        self.publisher = publisher
        self.ledger = ledger
        self.committer = committer
        self.metrics = metrics
        self.control = control
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: WorkerSettings) -> "ScoreRun":
        observing = settings.observing
        control = RunControl(until_idle_s=settings.until_idle_s)
        observers = Observers(observing, control)
        ledger = DeliveryLedger()
        return cls(Publisher(observing.bootstrap_servers, settings.scored_topic, client_id="tickerpulse-scored"),
                   ledger, OffsetCommitter(observing.bootstrap_servers, observing.group_id, ledger),
                   observers.metrics, control).observed_by(observers)

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

    def _finish(self) -> None:
        """The final commit of what the broker acknowledged."""
        with self._lock:
            self.committer.commit()
            self.committer.close()
            self.publisher.close()


class _PublishFn(RunDoFn):
    """Publishes a bundle's records of one kind at its end (bundles are one poll of one partition)."""

    def __init__(self, handle: RunHandle[ScoreRun], kind: str) -> None:
        super().__init__(handle)
        self._kind = kind

    def start_bundle(self) -> None:
        self._rows: list = []

    def process(self, row: Item | DeadLetter) -> None:
        self._rows.append(row)

    def finish_bundle(self) -> None:
        if self._rows:
            self.shared_run.publish(**{self._kind: self._rows})
        self._rows = []


class PublishScored(beam.PTransform):
    """Scored items or dead letters -> the scored topic; their input offsets become committable."""

    KINDS = ("items", "dead_letters")

    def __init__(self, handle: RunHandle[ScoreRun], kind: str) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {self.KINDS}")
        self._fn = _PublishFn(handle, kind)

    def expand(self, rows):
        return rows | "Publish" >> beam.ParDo(self._fn)


def build(pipeline: beam.Pipeline, args: argparse.Namespace, source: KafkaSourceConfig, links: Linking,
          handle: RunHandle[ScoreRun]) -> None:
    """The worker's graph: the stream's first stages, then publish (fuses into one stage locally)."""
    items, parse_dead = parse_and_link(pipeline | "Read Kafka" >> ReadFromKafka(source, handle), links)
    handler = SentimentModelHandler(args.model, args.device, args.precision, batch_size=args.batch_size)
    scored = items | "Score" >> Score(handler)
    _ = scored["items"] | "Publish scored items" >> PublishScored(handle, "items")
    _ = parse_dead | "Publish parse dead letters" >> PublishScored(handle, "dead_letters")
    _ = scored[DEAD] | "Publish score dead letters" >> PublishScored(handle, "dead_letters")


def run_worker(args: argparse.Namespace, options: PipelineOptions,
               links: Linking) -> StreamMetrics | WorkerCounts:
    """Run one scoring worker until stopped (or idle, with --until-idle); returns its counters
    (the runner's, where the runner's workers ran it)."""
    source = KafkaSourceConfig(args.bootstrap_servers, args.group_id, tuple(args.topics),
                               max_records=args.max_poll_records,
                               spare_partitions=args.spare_partitions, worker_index=args.worker_index,
                               workers=args.workers)
    settings = WorkerSettings(observing(args), args.scored_topic, args.until_idle)
    handle = RunHandle(functools.partial(ScoreRun.open, settings), f"score-{uuid.uuid4()}")
    log.info("scoring worker %d of %d: partitions p %% %d == %d of %s -> %s", args.worker_index, args.workers,
             args.workers, args.worker_index, ", ".join(args.topics), args.scored_topic)
    return run_job(options, handle, functools.partial(build, args=args, source=source, links=links, handle=handle))
