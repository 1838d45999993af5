"""The labelled Beam steps of docs/architecture.md; the logic itself lives in pure modules.

Every step that can refuse a record emits a ``DeadLetter`` on the tagged output ``dead``.
"""
from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference
from apache_beam.runners.runner import PipelineResult
from apache_beam.utils.shared import Shared

from connectors.files.readers import count_records, file_format, read_records
from connectors.kafka.range import PartitionRange, read_range
from connectors.records import DeadLetter, Item, RawRecord
from models.aggregation import AggregationConfig, RelevanceConfig, aggregate_tickers, relevance
from pipeline.novelty import novelty_counts
from pipeline.parse import parse_record
from pipeline.progress import ProgressMeter
from pipeline.scoring import SentimentModelHandler
from pipeline.stored_items import LOOKUP_BATCH, AggregateWithStoredFn, DropStoredIds, NoveltyWithStoredFn
from pipeline.tickers import Linking

DEAD = "dead"
NAMESPACE = "tickerpulse"
COUNTERS = ("read", "scored", "dead_letters", "duplicates")  # what the graph's steps count in NAMESPACE


def committed_counters(result: PipelineResult) -> dict[str, int]:
    """The graph's ``COUNTERS`` as the runner committed them, summed over its workers."""
    counts = dict.fromkeys(COUNTERS, 0)
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        if counter.key.metric.name in counts:
            counts[counter.key.metric.name] += counter.committed or 0
    return counts


# What a damaged .gz raises while it is read: the reader's dead letter, the counter's unknown total.
DECOMPRESS_ERRORS = (zlib.error, EOFError, gzip.BadGzipFile)


@contextmanager
def _open_input(path: str) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed when its name ends in ``.gz``: by Python's gzip, which
    raises EOFError on a file cut short (Beam's CompressedFile takes it as complete). Parquet
    needs random access, so a gzipped Parquet file is decompressed into memory first."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if not path.lower().endswith(".gz"):
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield io.BytesIO(stream.read()) if file_format(path) == ".parquet" else stream


def _read_file(path: str) -> Iterator[RawRecord]:
    """The file's records; a compressed file that does not decompress ends in one refused record
    holding its compressed bytes (records read before the damage are kept)."""
    try:
        with _open_input(path) as stream:
            yield from read_records(stream, path)
    except DECOMPRESS_ERRORS as exc:
        reason = f"the file is truncated ({exc})" if isinstance(exc, EOFError) else str(exc)
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            yield RawRecord(raw=raw.read(), location=path, refused=f"cannot decompress: {reason}")


def count_file(path: str) -> int | None:
    """``count_records`` of the file as ``_read_file`` opens it; None when it cannot be counted
    (the read then turns the damage into a dead letter)."""
    try:
        with _open_input(path) as stream:
            return count_records(stream, path)
    except DECOMPRESS_ERRORS:
        return None


class ReadFiles(beam.PTransform):
    """JSONL/JSON/CSV/Parquet files (any Beam file system) -> RawRecord located ``path:line``."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self._paths = list(paths)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[RawRecord]:
        return (
            pbegin
            | "Paths" >> beam.Create(self._paths)
            | "Spread files" >> beam.Reshuffle()
            | "Read records" >> beam.FlatMap(_read_file)
        )


class ReadKafkaRange(beam.PTransform):
    """A bounded Kafka read: one resolved [start, end) offset range per partition, read in parallel."""

    def __init__(self, bootstrap_servers: str, ranges: list[PartitionRange]) -> None:
        super().__init__()
        self._bootstrap_servers = bootstrap_servers
        self._ranges = [r for r in ranges if r.size]

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[RawRecord]:
        bootstrap = self._bootstrap_servers
        return (
            pbegin
            | "Partition ranges" >> beam.Create(self._ranges)
            | "Spread partitions" >> beam.Reshuffle()
            | "Read records" >> beam.FlatMap(lambda part: read_range(bootstrap, part))
        )


class _ParseFn(beam.DoFn):
    def __init__(self) -> None:
        self._read = Metrics.counter(NAMESPACE, "read")
        self._dead = Metrics.counter(NAMESPACE, "dead_letters")

    def process(self, record: RawRecord) -> Iterator[Item | beam.pvalue.TaggedOutput]:
        self._read.inc()
        result = parse_record(record)
        if isinstance(result, DeadLetter):
            self._dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD, result)
        else:
            yield result


class Parse(beam.PTransform):
    """RawRecord -> Item (main output) | DeadLetter (``dead``)."""

    def expand(self, records: beam.PCollection[RawRecord]) -> beam.pvalue.DoOutputsTuple:
        return records | "Validate" >> beam.ParDo(_ParseFn()).with_outputs(DEAD, main="items")


class _ExtractTickersFn(beam.DoFn):
    def __init__(self, linking: Linking) -> None:
        self._linking = linking
        self._shared = Shared()  # one extractor (company table, automaton) per worker process

    def setup(self) -> None:
        self._extractor = self._shared.acquire(self._linking.extractor, tag=repr(self._linking))

    def process(self, item: Item) -> Iterator[Item]:
        links = self._extractor.extract(item.text, item.tickers)
        yield item.with_(tickers=tuple(t for t, _ in links), ticker_links=tuple(how for _, how in links))


class ExtractTickers(beam.PTransform):
    """The record's own tickers, cashtags, the user's aliases and company names -> canonical
    tickers, each with how it was found (docs/companies.md)."""

    def __init__(self, linking: Linking | None = None) -> None:
        super().__init__()
        self._linking = linking or Linking(aliases={})

    def expand(self, items: beam.PCollection[Item]) -> beam.PCollection[Item]:
        return items | "Find tickers" >> beam.ParDo(_ExtractTickersFn(self._linking))


def _preference(item: Item) -> tuple:
    """Which copy of a repeated id is kept: the first in Kafka (as the stream keeps it), then the
    earliest, then by text, so the choice never depends on the order Beam delivers them."""
    return (item.kafka_topic or "", item.kafka_partition or 0, item.kafka_offset or 0, item.ts, item.text)


class _KeepFirst(beam.CombineFn):
    """(preferred item, copies seen); a combiner, so copies are merged before the shuffle."""

    def create_accumulator(self) -> tuple[Item | None, int]:
        return None, 0

    def add_input(self, acc: tuple[Item | None, int], item: Item) -> tuple[Item | None, int]:
        best, count = acc
        return (item if best is None or _preference(item) < _preference(best) else best), count + 1

    def merge_accumulators(self, accs: Iterable[tuple[Item | None, int]]) -> tuple[Item | None, int]:
        best, total = None, 0
        for item, count in accs:
            total += count
            if item is not None and (best is None or _preference(item) < _preference(best)):
                best = item
        return best, total

    def extract_output(self, acc: tuple[Item | None, int]) -> tuple[Item | None, int]:
        return acc


class _CountDuplicatesFn(beam.DoFn):
    def __init__(self) -> None:
        self._duplicates = Metrics.counter(NAMESPACE, "duplicates")

    def process(self, keyed: tuple[str, tuple[Item, int]]) -> Iterator[Item]:
        item, copies = keyed[1]
        self._duplicates.inc(copies - 1)
        yield item


class DropDuplicateIds(beam.PTransform):
    """Batch: one item per id (a record read twice, or re-published with the same id); with
    ``stored_db``, none whose id that file already holds (pipeline.stored_items)."""

    def __init__(self, stored_db: str | None = None) -> None:
        super().__init__()
        self._stored_db = stored_db

    def expand(self, items: beam.PCollection[Item]) -> beam.PCollection[Item]:
        unique = (
            items
            | "Key by id" >> beam.Map(lambda item: (item.id, item))
            | "Keep first" >> beam.CombinePerKey(_KeepFirst())
            | "Count duplicates" >> beam.ParDo(_CountDuplicatesFn())
        )
        if self._stored_db is None:
            return unique
        return unique | "Drop stored ids" >> DropStoredIds(self._stored_db, NAMESPACE)


def _with_novelty(keyed: tuple[str, Iterable[Item]], horizon_s: float) -> list[Item]:
    same_text = list(keyed[1])
    counts = novelty_counts([(item.ts.timestamp(), item.id) for item in same_text], horizon_s)
    return [item.with_(novelty_n=n) for item, n in zip(same_text, counts)]


class Novelty(beam.PTransform):
    """Batch: ``novelty_n`` = earlier items with the same text key within the horizon (pipeline.novelty),
    counting the copies ``stored_db`` already holds when given (pipeline.stored_items)."""

    def __init__(self, horizon_s: float, stored_db: str | None = None) -> None:
        super().__init__()
        self._horizon_s = horizon_s
        self._stored_db = stored_db

    def expand(self, items: beam.PCollection[Item]) -> beam.PCollection[Item]:
        grouped = (items
                   | "Key by text" >> beam.Map(lambda item: (item.text_key, item))
                   | "Group same text" >> beam.GroupByKey())
        if self._stored_db is None:
            return grouped | "Count earlier copies" >> beam.FlatMap(_with_novelty, self._horizon_s)
        return (grouped
                | "Batch texts" >> beam.BatchElements(min_batch_size=1, max_batch_size=LOOKUP_BATCH)
                | "Count earlier copies" >> beam.ParDo(NoveltyWithStoredFn(self._stored_db, self._horizon_s)))


def item_json(item: Item) -> bytes:
    """An item as a JSON record, for dead letters raised after parsing (the raw bytes are gone)."""
    return json.dumps({"id": item.id, "text": item.text, "published_at": item.ts.isoformat(),
                       "source": item.source, "tickers": list(item.tickers)}, ensure_ascii=False).encode("utf-8")


def _failed_batch(failure: tuple[list[Item], object]) -> Iterator[DeadLetter]:
    batch, error = failure
    reason = f"scoring failed: {error[1] if isinstance(error, tuple) and len(error) > 1 else error}"
    for item in batch:
        location = (f"{item.kafka_topic}/{item.kafka_partition}/{item.kafka_offset}"
                    if item.kafka_topic is not None else f"id:{item.id}")
        yield DeadLetter(raw=item_json(item), reason=reason[:1000], stage="score", location=location,
                         kafka_topic=item.kafka_topic, kafka_partition=item.kafka_partition,
                         kafka_offset=item.kafka_offset)


class _CountFn(beam.DoFn):
    def __init__(self, name: str) -> None:
        self._counter = Metrics.counter(NAMESPACE, name)

    def process(self, element: object) -> Iterator[object]:
        self._counter.inc()
        yield element


class Score(beam.PTransform):
    """RunInference with the sentiment engine; a batch the model cannot score goes to ``dead``."""

    def __init__(self, handler: SentimentModelHandler) -> None:
        super().__init__()
        self._handler = handler

    def expand(self, items: beam.PCollection[Item]) -> dict[str, beam.PCollection]:
        scored, failures = items | "RunInference" >> RunInference(self._handler).with_exception_handling()
        counted = scored | "Count scored" >> beam.ParDo(_CountFn("scored"))
        dead = (failures.failed_inferences
                | "Dead batches" >> beam.FlatMap(_failed_batch)
                | "Count dead" >> beam.ParDo(_CountFn("dead_letters")))
        return {"items": counted, DEAD: dead}


class Relevance(beam.PTransform):
    """r_i of the aggregation attention from confidence, source and novelty (models.aggregation)."""

    def __init__(self, cfg: RelevanceConfig | None = None) -> None:
        super().__init__()
        self._cfg = cfg or RelevanceConfig()

    def expand(self, items: beam.PCollection[Item]) -> beam.PCollection[Item]:
        cfg = self._cfg
        return items | "Relevance" >> beam.Map(
            lambda item: item.with_(relevance=relevance(item.confidence, item.source, item.novelty_n, cfg)))


def per_ticker(item: Item) -> Iterator[tuple[str, tuple[str, float, float, float]]]:
    """(ticker, (id, ts, score, relevance)) for each ticker of a scored item: the aggregation's input."""
    for ticker in item.tickers:
        yield ticker, (item.id, item.ts.timestamp(), item.score, item.relevance)


class Aggregate(beam.PTransform):
    """Batch: per ticker, the recency-weighted sentiment on the cadence grid for every half-life.

    With ``stored_db``, the points the run's items affect, over them and the items that file
    already holds (pipeline.stored_items)."""

    def __init__(self, cfg: AggregationConfig, stored_db: str | None = None) -> None:
        super().__init__()
        self._cfg = cfg
        self._stored_db = stored_db

    def expand(self, items: beam.PCollection[Item]) -> beam.PCollection:
        cfg = self._cfg
        batches = (
            items
            | "Per ticker" >> beam.FlatMap(per_ticker)
            | "Group by ticker" >> beam.GroupByKey()
            # Many tickers per call: one set of segment softmaxes instead of a torch call per ticker.
            | "Batch tickers" >> beam.BatchElements(min_batch_size=1, max_batch_size=512)
        )
        if self._stored_db is not None:
            return batches | "Recency attention" >> beam.ParDo(AggregateWithStoredFn(self._stored_db, cfg))
        return batches | "Recency attention" >> beam.FlatMap(
            lambda groups: aggregate_tickers({ticker: list(rows) for ticker, rows in groups}, cfg))


class _ProgressFn(beam.DoFn):
    def __init__(self, label: str, total: int | None, interval_s: float) -> None:
        self._label, self._total, self._interval_s = label, total, interval_s

    def setup(self) -> None:
        self._meter = ProgressMeter(self._label, self._total, self._interval_s)

    def process(self, element: object) -> Iterator[object]:
        self._meter.add()
        yield element


class ReportProgress(beam.PTransform):
    """Passes elements through, logging count, rate and ETA every ``interval_s`` per worker."""

    def __init__(self, label: str, total: int | None = None, interval_s: float = 5.0) -> None:
        super().__init__()
        self._label, self._total, self._interval_s = label, total, interval_s

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "Progress" >> beam.ParDo(_ProgressFn(self._label, self._total, self._interval_s))
