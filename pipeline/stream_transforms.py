"""The streaming-only steps: per-key state without watermarks or timers, and the durable sink.

Why not windows: the local FnApiRunner never advances the watermark of an unbounded source, so
event-time windows and timers never fire there, and it runs a stage only once the stage before
it has finished, so any GroupByKey or Flatten after the source would hold everything back until
the job stops. These steps are therefore plain DoFns (no grouping), which the runner fuses with
the source: a record flows from Kafka to DuckDB inside one bundle. The per-ticker and novelty
state they update is a :class:`pipeline.stream_state.StreamState` in the job's process, rebuilt
from DuckDB on restart.

Everything the job shares in its process (writer, offset ledger, metrics, state) hangs off a
:class:`StreamRun` found by run id.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import duckdb
from apache_beam.utils.windowed_value import WindowedValue

from connectors.duckdb.sink import REOPEN_AFTER_S, DuckDBSink, StoreFault, one_line
from connectors.kafka.offsets import DeliveryLedger, OffsetCommitter
from connectors.kafka.relay import RelayLedger
from connectors.kafka.source import RunControl
from connectors.records import DeadLetter, Item
from models.aggregation import AggregationConfig, SentimentPoint
from pipeline.metrics import StreamMetrics
from pipeline.run_handle import Observers, Observing, RunDoFn, RunHandle, SharedRun
from pipeline.stream_state import StreamState, rebuild_state
from pipeline.transforms import per_ticker

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
SCORED = "scored"  # items written with the points they change


@dataclass(frozen=True)
class StreamSettings:
    """What a process needs to open a :class:`StreamRun`; picklable, so it travels with the steps."""

    db: str
    cfg: AggregationConfig
    observing: Observing
    until_idle_s: float | None = None
    allowed_lateness_s: float | None = None
    snapshot_interval_s: float = 1.0
    memory_limit: str | None = None

    def open_sink(self) -> DuckDBSink:
        return DuckDBSink(self.db, snapshot_interval_s=self.snapshot_interval_s, memory_limit=self.memory_limit,
                          reopen_after_s=REOPEN_AFTER_S)

    def acks(self, ledger: DeliveryLedger) -> DeliveryLedger | RelayLedger:
        """Where written rows are acknowledged: the source's ledger, by the rows' Kafka location."""
        return ledger


class StreamRun(SharedRun):
    """One streaming run's shared parts in the writer's process: the writer and what follows a write.

    ``write`` is the durability point: rows in one DuckDB transaction, then their Kafka offsets
    acknowledged (in ``acks``: the source's ledger, or a relay onto it), then (throttled) the
    consumer-group commit of the source's ``ledger``.

    A ``StoreFault`` (the file removed, replaced or failing, see ``DuckDBSink``) ends the run's
    writing: it is kept in ``fault``, the source is asked to stop (``control``), and from then on
    rows are neither written nor acknowledged and no offset is committed, so the records since the
    last commit are replayed by the next run.
    """

    def __init__(self, sink: DuckDBSink, ledger: DeliveryLedger, committer: OffsetCommitter | None,
                 metrics: StreamMetrics, state: StreamState, control: RunControl | None = None,
                 acks: DeliveryLedger | RelayLedger | None = None) -> None:
        super().__init__()
        self.sink = sink
        self.ledger = ledger
        self.acks = acks if acks is not None else ledger
        self.committer = committer
        self.metrics = metrics
        self.state = state
        self.control = control if control is not None else RunControl()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: StreamSettings) -> "StreamRun":
        """Open the file, rebuild the state from it (restoring every point that may still change),
        and start reporting."""
        control = RunControl(until_idle_s=settings.until_idle_s)
        observers = Observers(settings.observing, control)
        sink = settings.open_sink()
        state, replayed, points = rebuild_state(sink, settings.cfg, settings.allowed_lateness_s)
        if replayed:
            sink.write(points=points)
            log.info("resumed state from %s: %d items replayed, %d tickers, %d open points recomputed",
                     settings.db, replayed, len(state.tickers), len(points))
        ledger = DeliveryLedger()
        committer = OffsetCommitter(settings.observing.bootstrap_servers, settings.observing.group_id, ledger,
                                    before_commit=sink.check_file)
        run = cls(sink, ledger, committer, observers.metrics, state, control, settings.acks(ledger))
        return run.observed_by(observers)

    def stored(self, item_ids: list[str]) -> set[str]:
        """Which of these ids are already in DuckDB (written by an earlier bundle or run)? One
        query per bundle (``DuckDBSink.stored_ids``). After a fault: none (the rows are not
        written either)."""
        with self._lock:
            if self.fault is not None:
                return set()
            try:
                return self.sink.stored_ids(item_ids)
            except duckdb.Error as exc:
                self._faulted(StoreFault(f"reading {self.sink.db_path} failed: {one_line(exc)}"))
                return set()

    def write(self, items: list[Item] = (), dead_letters: list[DeadLetter] = (),
              points: list[SentimentPoint] = ()) -> None:
        with self._lock:
            self._write(items, dead_letters, points)

    def _write(self, items: list[Item], dead_letters: list[DeadLetter], points: list[SentimentPoint]) -> None:
        if self.fault is not None:
            return
        try:
            self.sink.write(items, dead_letters, points)
        except StoreFault as exc:
            self._faulted(exc)
            return
        now_ms = time.time() * 1000
        for record in (*items, *dead_letters):
            if record.kafka_topic is not None:
                self._acked(record.kafka_topic, record.kafka_partition, record.kafka_offset, now_ms)
        self.metrics.add(scored=len(items), dead_lettered=len(dead_letters), points=len(points))
        self._maybe_commit()

    def write_scored(self, items: list[Item]) -> None:
        """Fold scored items into the state and write them with every point they changed, in one
        transaction: no crash can store a bundle's items without its points."""
        with self._lock:
            if self.fault is not None:
                return
            folded = self.state.fold([(ticker, *row) for item in items for ticker, row in per_ticker(item)])
            self.metrics.add(late=folded.late)
            self._write(items, (), folded.points)

    def commit_due(self) -> None:
        """Runs about once a second: check the file (a quiet job also stops within a second of
        losing it), commit what became durable since the last commit, and publish a due snapshot
        (a burst followed by quiet gets no later write to publish it)."""
        with self._lock:
            if self.fault is not None:
                return
            try:
                self.sink.check_file()
            except StoreFault as exc:
                self._faulted(exc)
                return
            self._maybe_commit()
            if self.fault is None:
                try:
                    self.sink.maybe_publish_snapshot()
                except StoreFault as exc:
                    self._faulted(exc)

    def dropped(self, items: list[Item]) -> None:
        """Duplicates need no row: acknowledging them lets the committed offset move past them."""
        with self._lock:
            if self.fault is not None:
                return
            now_ms = time.time() * 1000
            for item in items:
                if item.kafka_topic is not None:
                    self._acked(item.kafka_topic, item.kafka_partition, item.kafka_offset, now_ms)
            self.metrics.add(duplicates=len(items))
            self._maybe_commit()

    def _acked(self, topic: str, partition: int, offset: int, now_ms: float) -> None:
        produced_ms = self.acks.ack((topic, partition), offset)
        if produced_ms is not None and produced_ms >= 0:
            self.metrics.observe_latency(max(0.0, now_ms - produced_ms) / 1000)

    def _maybe_commit(self, final: bool = False) -> None:
        if self.committer is None or self.fault is not None:
            return
        try:
            if final:
                self.committer.commit()
            else:
                self.committer.maybe_commit()
        except StoreFault as exc:
            self._faulted(exc)

    def _faulted(self, fault: StoreFault) -> None:
        if self.fault is None:
            self.fault = fault
            self.control.request_stop()

    def _finish(self) -> None:
        """The final commit of what is durable (none after a fault), a snapshot, then close the
        file; a fault found on the way is kept in ``fault``."""
        with self._lock:
            self._maybe_commit(final=True)
            if self.committer is not None:
                self.committer.close()
            try:
                self.sink.close()
            except StoreFault as exc:
                self._faulted(exc)


class _DropRepeatedIdsFn(RunDoFn):
    """The first copy of an id passes; a copy of an id stored in DuckDB (by an earlier bundle or
    run) or seen earlier in this bundle goes to ``duplicate``. Items are held to the end of the
    bundle so that DuckDB is asked once per bundle; the bundle's rows are only written at its end
    anyway, so this adds no latency. Bundles end with their rows written, so ids from earlier
    bundles are all in DuckDB: this keeps no state across bundles."""

    def start_bundle(self) -> None:
        self._held: list[WindowedValue] = []

    def process(self, item: Item, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam) -> None:
        self._held.append(WindowedValue(item, timestamp, (window,)))

    def finish_bundle(self) -> Iterator[object]:
        if not self._held:
            return
        seen = self.shared_run.stored([held.value.id for held in self._held])
        for held in self._held:
            if held.value.id in seen:
                yield beam.pvalue.TaggedOutput(DUPLICATE, held)
            else:
                seen.add(held.value.id)
                yield held
        self._held = []


class DropRepeatedIds(beam.PTransform):
    """Stream: one item per id, across restarts too (an id already in DuckDB is a repeat). Repeats
    are acknowledged, not stored, so the committed offset moves past them."""

    def __init__(self, handle: RunHandle[StreamRun]) -> None:
        super().__init__()
        self.handle = handle

    def expand(self, items):
        unique = items | "Keep first" >> beam.ParDo(_DropRepeatedIdsFn(self.handle)).with_outputs(DUPLICATE, main="items")
        _ = unique[DUPLICATE] | "Acknowledge duplicates" >> WriteStream(self.handle, DUPLICATE)
        return unique.items


class _NoveltyFn(RunDoFn):
    def process(self, item: Item) -> Iterator[Item]:
        yield item.with_(novelty_n=self.shared_run.state.novelty_n(item.text_key, item.ts.timestamp(), item.id))


class StreamNovelty(beam.PTransform):
    """Stream: ``novelty_n`` = earlier items with the same text key within the horizon."""

    def __init__(self, handle: RunHandle[StreamRun]) -> None:
        super().__init__()
        self.handle = handle

    def expand(self, items):
        return items | "Count earlier copies" >> beam.ParDo(_NoveltyFn(self.handle))


class StreamRecencyAttention(beam.PTransform):
    """Stream: scored items -> per-ticker points on the event-time cadence, written with the items.

    Each bundle's items are folded into the state (late ones restate the points they change) and
    written together with those points in one transaction (``StreamRun.write_scored``).
    """

    def __init__(self, handle: RunHandle[StreamRun], max_rows: int = 5000) -> None:
        super().__init__()
        self.handle = handle
        self.max_rows = max_rows

    def expand(self, items):
        return items | "Fold and write" >> beam.ParDo(_WriteFn(self.handle, SCORED, self.max_rows))


class _WriteFn(RunDoFn):
    """Buffers a bundle's rows of one kind and writes them at its end (bundles are one poll)."""

    def __init__(self, handle: RunHandle[StreamRun], kind: str, max_rows: int) -> None:
        super().__init__(handle)
        self.kind = kind
        self.max_rows = max_rows

    def start_bundle(self) -> None:
        self._rows: list = []

    def process(self, row: object) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.max_rows:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        run = self.shared_run
        if self.kind == DUPLICATE:
            run.dropped(self._rows)
        elif self.kind == SCORED:
            run.write_scored(self._rows)
        else:
            run.write(dead_letters=self._rows)
        self._rows = []


class WriteStream(beam.PTransform):
    """Rows of one kind: dead_letters (stored), or duplicate (acknowledged, not stored). Scored
    items are written with their points by ``StreamRecencyAttention``."""

    KINDS = ("dead_letters", DUPLICATE)

    def __init__(self, handle: RunHandle[StreamRun], kind: str, max_rows: int = 5000) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {self.KINDS}")
        self.handle = handle
        self.kind = kind
        self.max_rows = max_rows

    def expand(self, rows):
        return rows | "Write" >> beam.ParDo(_WriteFn(self.handle, self.kind, self.max_rows))


class StreamMode:
    """The unbounded forms of the stages (``pipeline.graph.Mode``), over one run's shared parts."""

    def __init__(self, handle: RunHandle[StreamRun]) -> None:
        self.handle = handle

    def dedupe(self) -> DropRepeatedIds:
        return DropRepeatedIds(self.handle)

    def novelty(self) -> StreamNovelty:
        return StreamNovelty(self.handle)

    def write(self, items: beam.PCollection, dead_letters: dict[str, beam.PCollection]) -> None:
        _ = items | "Aggregate and write" >> StreamRecencyAttention(self.handle)
        for stage, dead in dead_letters.items():
            _ = dead | f"Write {stage} dead letters" >> WriteStream(self.handle, "dead_letters")
