"""The streaming-only steps: per-key state without watermarks or timers, and the durable sink.

Why not windows: the local FnApiRunner never advances the watermark of an unbounded source, so
event-time windows and timers never fire there, and it runs a stage only once the stage before
it has finished, so any GroupByKey or Flatten after the source would hold everything back until
the job stops. These steps are therefore plain and stateful DoFns (Beam keyed state, no
grouping), which the runner fuses with the source: a record flows from Kafka to DuckDB inside one
bundle. :class:`EventTimeRecencyAttention` keeps native sliding windows for runners whose
watermark advances (Dataflow, Flink).

State survives a restart through DuckDB: :func:`rebuild_state` replays the items within the
horizon into fresh per-ticker and per-text states, which the stateful DoFns adopt the first time
they see a key. Everything the job shares in its process (writer, offset ledger, metrics, seeds)
hangs off a :class:`StreamRun` found by run id.
"""
from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.coders import BooleanCoder, BytesCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import SlidingWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration

from connectors.duckdb.sink import DuckDBSink
from connectors.kafka.offsets import DeliveryLedger, OffsetCommitter
from models.aggregation import AggregationConfig, SentimentPoint, TickerState, aggregate_series
from pipeline.metrics import StreamMetrics
from pipeline.novelty import NoveltyTracker
from pipeline.records import DeadLetter, Item

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"


@dataclass
class Seeds:
    """Per-key states rebuilt from DuckDB, adopted by the stateful DoFns on first sight of a key."""

    tickers: dict[str, TickerState] = field(default_factory=dict)
    texts: dict[str, NoveltyTracker] = field(default_factory=dict)
    items: int = 0


def rebuild_state(sink: DuckDBSink, cfg: AggregationConfig) -> tuple[Seeds, list[SentimentPoint]]:
    """Replay the stored items near the newest one, in event-time order, into fresh states.

    Returns the seeds and the points whose horizon the replay fully covers: they are rewritten
    (upsert), which restores any point a crash kept from being written after its items.
    """
    seeds = Seeds()
    newest = sink.con.execute("SELECT epoch(max(ts)) FROM items").fetchone()[0]
    if newest is None:
        return seeds, []
    start = newest - cfg.horizon_s - cfg.cadence_s
    rows = sink.con.execute(
        "SELECT i.id, epoch(i.ts), i.score, i.relevance, i.text_key, t.ticker FROM items i "
        "LEFT JOIN item_tickers t ON t.item_id = i.id WHERE epoch(i.ts) > ? ORDER BY i.ts, i.id, t.ticker",
        [start]).fetchall()
    points: list[SentimentPoint] = []
    last_id = None
    for item_id, ts_s, score, relevance, text_key, ticker in rows:
        if item_id != last_id:
            seeds.texts.setdefault(text_key, NoveltyTracker(cfg.horizon_s)).observe(text_key, ts_s, item_id)
            seeds.items += 1
            last_id = item_id
        if ticker is not None:
            state = seeds.tickers.setdefault(ticker, TickerState(ticker, cfg))
            points += [p for p in state.add(item_id, ts_s, score, relevance) if p.ts_s - cfg.horizon_s >= start]
    return seeds, points


class StreamRun:
    """One streaming run's shared parts in the job's process: the writer and what follows a write.

    ``write`` is the durability point: rows in one DuckDB transaction, then their Kafka offsets
    acknowledged in the ledger, then (throttled) the consumer-group commit.
    """

    def __init__(self, sink: DuckDBSink, ledger: DeliveryLedger, committer: OffsetCommitter | None,
                 metrics: StreamMetrics, seeds: Seeds | None = None) -> None:
        self.sink = sink
        self.ledger = ledger
        self.committer = committer
        self.metrics = metrics
        self.seeds = seeds or Seeds()
        self._lock = threading.Lock()
        self._lookup = sink.con.cursor()

    def stored(self, item_id: str) -> bool:
        """Is this id already in DuckDB (an earlier run wrote it before its offset was committed)?"""
        with self._lock:
            return self._lookup.execute("SELECT 1 FROM items WHERE id = ?", [item_id]).fetchone() is not None

    def write(self, items: list[Item] = (), dead_letters: list[DeadLetter] = (),
              points: list[SentimentPoint] = ()) -> None:
        with self._lock:
            self.sink.write(items, dead_letters, points)
            now_ms = time.time() * 1000
            for record in (*items, *dead_letters):
                if record.kafka_topic is not None:
                    self._acked(record.kafka_topic, record.kafka_partition, record.kafka_offset, now_ms)
            self.metrics.add(scored=len(items), dead_lettered=len(dead_letters), points=len(points))
            if self.committer is not None:
                self.committer.maybe_commit()

    def commit_due(self) -> None:
        """Commit what became durable since the last commit (a quiet topic gets no more writes)."""
        if self.committer is not None:
            with self._lock:
                self.committer.maybe_commit()

    def dropped(self, items: list[Item]) -> None:
        """Duplicates need no row: acknowledging them lets the committed offset move past them."""
        with self._lock:
            now_ms = time.time() * 1000
            for item in items:
                if item.kafka_topic is not None:
                    self._acked(item.kafka_topic, item.kafka_partition, item.kafka_offset, now_ms)
            self.metrics.add(duplicates=len(items))
            if self.committer is not None:
                self.committer.maybe_commit()

    def _acked(self, topic: str, partition: int, offset: int, now_ms: float) -> None:
        produced_ms = self.ledger.ack((topic, partition), offset)
        if produced_ms is not None and produced_ms >= 0:
            self.metrics.observe_latency(max(0.0, now_ms - produced_ms) / 1000)

    def settle(self, cfg: AggregationConfig) -> int:
        """Rewrite the last horizon's points in event-time order; returns how many.

        Records of several partitions (or of a backlog) arrive out of event-time order, and a late
        item joins later points without rewriting the ones already emitted. At a clean stop the
        job replays the stored items, as a restart would, so what it leaves behind is exact.
        """
        with self._lock:
            _, points = rebuild_state(self.sink, cfg)
            self.sink.write(points=points)
            return len(points)

    def close(self) -> None:
        with self._lock:
            if self.committer is not None:
                self.committer.commit()
                self.committer.close()
            self._lookup.close()
            self.sink.close()


_RUNS: dict[str, StreamRun] = {}
_RUNS_LOCK = threading.Lock()


def register_run(run_id: str, run: StreamRun) -> None:
    with _RUNS_LOCK:
        _RUNS[run_id] = run


def stream_run(run_id: str) -> StreamRun:
    with _RUNS_LOCK:
        run = _RUNS.get(run_id)
    if run is None:
        raise RuntimeError(f"no streaming run {run_id!r} in this process: the DuckDB sink and the "
                           "offset ledger need the local runner (source and sink in one process)")
    return run


def unregister_run(run_id: str) -> None:
    with _RUNS_LOCK:
        _RUNS.pop(run_id, None)


class _DropRepeatedIdsFn(beam.DoFn):
    """Keyed by item id: the first copy passes, later copies go to ``duplicate``."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def process(self, keyed: tuple[str, Item], seen=beam.DoFn.StateParam(SEEN)) -> Iterator[object]:
        item_id, item = keyed
        if seen.read() or stream_run(self.run_id).stored(item_id):
            yield beam.pvalue.TaggedOutput(DUPLICATE, item)
            return
        seen.write(True)
        yield item


class DropRepeatedIds(beam.PTransform):
    """Stream: one item per id, across restarts too (an id already in DuckDB is a repeat)."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def expand(self, items):
        return (items
                | "Key by id" >> beam.Map(lambda item: (item.id, item)).with_output_types(tuple[str, Item])
                | "Keep first" >> beam.ParDo(_DropRepeatedIdsFn(self.run_id)).with_outputs(DUPLICATE, main="items"))


def _read_pickled(state) -> Any:
    raw = state.read()
    return None if raw is None else pickle.loads(raw)


def _write_pickled(state, value: object) -> None:
    """Keyed state holds pickled bytes, not objects: Beam's state cache weighs every value it
    caches with objsize, walking each object of a TickerState's lists on every write and load
    (measured: a third of the stream job's time); bytes weigh in O(1) and pickle is C code."""
    state.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


class _NoveltyFn(beam.DoFn):
    """Keyed by text key: pipeline.novelty's tracker for that key, kept in Beam state."""

    TRACKER = ReadModifyWriteStateSpec("tracker", BytesCoder())

    def __init__(self, run_id: str, horizon_s: float) -> None:
        self.run_id = run_id
        self.horizon_s = horizon_s

    def process(self, keyed: tuple[str, Item], tracker_state=beam.DoFn.StateParam(TRACKER)) -> Iterator[Item]:
        key, item = keyed
        tracker = _read_pickled(tracker_state)
        if tracker is None:
            tracker = stream_run(self.run_id).seeds.texts.pop(key, None) or NoveltyTracker(self.horizon_s)
        n = tracker.observe(key, item.ts.timestamp(), item.id)
        _write_pickled(tracker_state, tracker)
        yield item.with_(novelty_n=n)


class StreamNovelty(beam.PTransform):
    """Stream: ``novelty_n`` = earlier items with the same text key within the horizon."""

    def __init__(self, run_id: str, horizon_s: float) -> None:
        super().__init__()
        self.run_id = run_id
        self.horizon_s = horizon_s

    def expand(self, items):
        return (items
                | "Key by text" >> beam.Map(lambda item: (item.text_key, item)).with_output_types(tuple[str, Item])
                | "Count earlier copies" >> beam.ParDo(_NoveltyFn(self.run_id, self.horizon_s)))


class _RecencyAttentionFn(beam.DoFn):
    """Keyed by ticker: the incremental TickerState in Beam state; emits the points now due."""

    STATE = ReadModifyWriteStateSpec("ticker_state", BytesCoder())

    def __init__(self, run_id: str, cfg: AggregationConfig) -> None:
        self.run_id = run_id
        self.cfg = cfg

    def process(self, keyed: tuple[str, tuple[str, float, float, float]],
                ticker_state=beam.DoFn.StateParam(STATE)) -> Iterator[SentimentPoint]:
        ticker, (item_id, ts_s, score, relevance) = keyed
        state = _read_pickled(ticker_state)
        if state is None:
            state = stream_run(self.run_id).seeds.tickers.pop(ticker, None) or TickerState(ticker, self.cfg)
        points = state.add(item_id, ts_s, score, relevance)
        _write_pickled(ticker_state, state)
        yield from points


def _per_ticker(item: Item) -> Iterator[tuple[str, tuple[str, float, float, float]]]:
    for ticker in item.tickers:
        yield ticker, (item.id, item.ts.timestamp(), item.score, item.relevance)


class StreamRecencyAttention(beam.PTransform):
    """Stream: per ticker, points on the event-time cadence as items arrive (newest provisional)."""

    def __init__(self, run_id: str, cfg: AggregationConfig) -> None:
        super().__init__()
        self.run_id = run_id
        self.cfg = cfg

    def expand(self, items):
        return (items
                | "Per ticker" >> beam.FlatMap(_per_ticker).with_output_types(tuple[str, tuple[str, float, float, float]])
                | "Update ticker state" >> beam.ParDo(_RecencyAttentionFn(self.run_id, self.cfg)))


def _point_at_window_end(keyed, cfg: AggregationConfig, window=beam.DoFn.WindowParam) -> Iterator[SentimentPoint]:
    ticker, rows = keyed
    as_of = window.end.micros / 1e6
    for point in aggregate_series(ticker, list(rows), cfg):
        if point.ts_s == as_of:
            yield point


class EventTimeRecencyAttention(beam.PTransform):
    """For runners whose watermark advances: a sliding window of the horizon every cadence step.

    A window [t - H, t) holds the items of the as-of time t once timestamps are shifted back by
    one microsecond (the horizon is t - H < t_i <= t). It emits the point at t when an item falls
    in t's cadence bucket; the stateful form also fills the grid points between sparse items.
    """

    def __init__(self, cfg: AggregationConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, items):
        cfg = self.cfg
        return (items
                | "Per ticker" >> beam.FlatMap(
                    lambda item: [TimestampedValue(kv, kv[1][1] - 1e-6) for kv in _per_ticker(item)])
                | "Horizon windows" >> beam.WindowInto(SlidingWindows(size=Duration.of(cfg.horizon_s),
                                                                      period=Duration.of(cfg.cadence_s)))
                | "Group by ticker" >> beam.GroupByKey()
                | "Point at window end" >> beam.FlatMap(_point_at_window_end, cfg))


class _WriteFn(beam.DoFn):
    """Buffers a bundle's rows of one kind and writes them at its end (bundles are one poll)."""

    def __init__(self, run_id: str, kind: str, max_rows: int) -> None:
        self.run_id = run_id
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
        run = stream_run(self.run_id)
        if self.kind == DUPLICATE:
            run.dropped(self._rows)
        else:
            run.write(**{self.kind: self._rows})
        self._rows = []


class WriteStream(beam.PTransform):
    """Rows of one kind (items, dead_letters, points, or duplicate: acknowledged, not stored)."""

    KINDS = ("items", "dead_letters", "points", DUPLICATE)

    def __init__(self, run_id: str, kind: str, max_rows: int = 5000) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {self.KINDS}")
        self.run_id = run_id
        self.kind = kind
        self.max_rows = max_rows

    def expand(self, rows):
        return rows | "Write" >> beam.ParDo(_WriteFn(self.run_id, self.kind, self.max_rows))
