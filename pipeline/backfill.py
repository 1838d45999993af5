"""``tickerpulse backfill``: files and/or a Kafka range -> scores -> DuckDB (or Parquet), bounded.

    python run_pipeline.py backfill --input 'data/*.jsonl' --db tp.duckdb
    python run_pipeline.py backfill --kafka-bootstrap localhost:9092 --topics news comments \\
        --from 2024-05-01T00:00 --to 2024-05-02T00:00 --db tp.duckdb
    python run_pipeline.py backfill --input 'gs://b/news/*.jsonl' --parquet-out gs://b/out \\
        --runner DataflowRunner --project P --region R --temp_location gs://b/tmp --setup_file ./setup.py

App flags are parsed here; everything else is a Beam flag passed to PipelineOptions. Locally the
runner is FnApiRunner unless ``--runner`` names another.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass

import apache_beam as beam
import duckdb
from apache_beam.io.filesystems import FileSystems
from kafka.errors import KafkaError

from connectors.duckdb.sink import DuckDBSink, WriteToDuckDB
from connectors.files.parquet_sink import WriteParquetTables
from connectors.files.readers import file_format
from connectors.kafka.range import PartitionRange, parse_bound, resolve_ranges
from models.aggregation import AggregationConfig
from pipeline.cli_args import UsageError, command_parser, duration_seconds, env_default, fill_list_env_defaults
from pipeline.graph import sentiment_graph
from pipeline.job_args import (add_aggregation_args, add_linking_args, add_model_args, aggregation_config,
                               check_db_path, check_model, check_precision, exit_status, linking, pipeline_options,
                               quiet_library_logs)
from pipeline.runner import make_pipeline
from pipeline.scoring import DEFAULT_BATCH_SIZE, SentimentModelHandler
from pipeline.stored_items import merge_parquet_run
from pipeline.tickers import Linking
from pipeline.transforms import (Aggregate, DropDuplicateIds, Novelty, ReadFiles, ReadKafkaRange,
                                 ReportProgress, committed_counters, count_file)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """App flags, and the rest for Beam's PipelineOptions."""
    args, beam_args = parser().parse_known_args(argv)
    fill_list_env_defaults(args, "input", "topics")
    return args, beam_args


def parser() -> argparse.ArgumentParser:
    p = command_parser("backfill", "Score files or a Kafka offset/time range into DuckDB (bounded run).")
    src = p.add_argument_group("sources (files, a Kafka range, or both)")
    src.add_argument("--input", action="extend", nargs="+", metavar="GLOB",
                     help="JSONL/JSON/CSV/Parquet files or globs (optionally .gz); repeatable")
    src.add_argument("--kafka-bootstrap", default=env_default("kafka_bootstrap"), metavar="HOST:PORT")
    src.add_argument("--topics", action="extend", nargs="+", metavar="TOPIC")
    src.add_argument("--from", dest="start", default=env_default("from", "earliest"), metavar="POS",
                     help="earliest (default), an offset, or an ISO-8601 time (UTC if no zone)")
    src.add_argument("--to", dest="end", default=env_default("to", "latest"), metavar="POS",
                     help="latest (default, the end when the run starts), an offset, or an ISO-8601 time; exclusive")
    out = p.add_argument_group("sink")
    out.add_argument("--db", default=env_default("db", "tickerpulse.duckdb"), help="DuckDB file (one writer)")
    out.add_argument("--parquet-out", default=env_default("parquet_out"), metavar="DIR",
                     help="write Parquet per table instead of DuckDB (many-worker runners)")
    out.add_argument("--import-parquet", default=env_default("import_parquet"), metavar="DIR",
                     help="only load a --parquet-out directory into --db, then exit")
    add_aggregation_args(p)
    add_model_args(p, DEFAULT_BATCH_SIZE)
    add_linking_args(p)
    p.add_argument("--progress-interval", type=duration_seconds, default=env_default("progress_interval", "5s"))
    return p


@dataclass(frozen=True)
class Summary:
    read: int
    scored: int
    dead_letters: int
    duplicates: int
    seconds: float

    def line(self) -> str:
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        return (f"backfill done in {self.seconds:.1f}s: read {self.read:,}, scored {self.scored:,}, "
                f"dead-lettered {self.dead_letters:,}, duplicates {self.duplicates:,} ({rate:,.0f} records/s)")


@dataclass(frozen=True)
class Plan:
    """What the command line asked for, checked before any pipeline is built."""

    paths: list[str]
    ranges: list[PartitionRange]
    expected: int | None
    linking: Linking
    aggregation: AggregationConfig
    stored_db: str | None = None  # the --db file, when it already holds items (pipeline.stored_items)


def plan(args: argparse.Namespace) -> Plan:
    if not args.input and not args.topics:
        raise UsageError("nothing to read: give --input and/or --kafka-bootstrap with --topics")
    if args.topics and not args.kafka_bootstrap:
        raise UsageError("--topics needs --kafka-bootstrap")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.parquet_out and os.path.isfile(args.parquet_out):
        raise UsageError(f"--parquet-out {args.parquet_out} is a file, not a directory")
    check_precision(args)
    aggregation = aggregation_config(args)
    links = linking(args)
    paths = expand_inputs(args.input or [])
    ranges = kafka_ranges(args) if args.topics else []
    counts = [count_file(path) for path in paths] + [r.size for r in ranges]
    expected = None if None in counts else sum(counts)  # a file that cannot be counted: no ETA
    return Plan(paths, ranges, expected, links, aggregation)


def expand_inputs(patterns: list[str]) -> list[str]:
    """The files the --input patterns match, in order, each once; a pattern no file system here
    can list (``gs://`` without apache-beam[gcp], ``s3://`` without boto3) or that matches
    nothing, a directory, an unreadable local file, or a name not UTF-8 or of no known format is
    a UsageError."""
    paths: list[str] = []
    for pattern in patterns:
        try:
            matched = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        except (ValueError, OSError) as exc:  # Beam: no such file system / its client is missing
            lines = str(exc).splitlines() or [type(exc).__name__]
            raise UsageError(f"--input {pattern!r}: cannot list files there: {lines[0][:300]}") from None
        if not matched:
            raise UsageError(f"--input {pattern!r} matches no file")
        for path in matched:
            if os.path.isdir(path):
                raise UsageError(f"--input {pattern!r}: {path} is a directory, not a file")
            if os.path.exists(path) and not os.access(path, os.R_OK):  # a local file (gs:// is not one)
                raise UsageError(f"--input {pattern!r}: {path} is not readable")
            try:
                path.encode("utf-8")  # os keeps undecodable bytes of a name as surrogate escapes
            except UnicodeEncodeError:
                raise UsageError(f"--input {pattern!r}: the name {path!r} is not UTF-8 (Beam passes file "
                                 "names as UTF-8 text; rename the file)") from None
            try:
                file_format(path)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        paths += [path for path in matched if path not in paths]
    return paths


def kafka_ranges(args: argparse.Namespace) -> list[PartitionRange]:
    try:
        start, end = parse_bound(args.start, "earliest"), parse_bound(args.end, "latest")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        return resolve_ranges(args.kafka_bootstrap, args.topics, start, end)
    except ValueError as exc:  # a topic that does not exist, or an address kafka-python cannot parse
        raise UsageError(f"--kafka-bootstrap {args.kafka_bootstrap}: {exc}") from None
    except KafkaError as exc:
        raise UsageError(f"cannot read Kafka at {args.kafka_bootstrap}: {exc}") from None


class BatchMode:
    """The bounded forms of the stages (``pipeline.graph.Mode``): dedupe and novelty group by key,
    the points are one batch over all items, and one writer takes every table at the end."""

    def __init__(self, args: argparse.Namespace, the_plan: Plan) -> None:
        self.args = args
        self.plan = the_plan

    def dedupe(self) -> DropDuplicateIds:
        return DropDuplicateIds(self.plan.stored_db)

    def novelty(self) -> Novelty:
        return Novelty(self.plan.aggregation.horizon_s, self.plan.stored_db)

    def write(self, items: beam.PCollection, dead_letters: dict[str, beam.PCollection]) -> None:
        items = items | "Progress scored" >> ReportProgress("scored", self.plan.expected, self.args.progress_interval)
        outputs = {
            "items": items,
            "dead_letters": tuple(dead_letters.values()) | "Merge dead letters" >> beam.Flatten(),
            "points": items | "Aggregate" >> Aggregate(self.plan.aggregation, self.plan.stored_db),
        }
        if self.args.parquet_out:
            _ = outputs | "Write Parquet" >> WriteParquetTables(self.args.parquet_out)
        else:
            _ = outputs | "Write DuckDB" >> WriteToDuckDB(self.args.db)


def build(pipeline: beam.Pipeline, args: argparse.Namespace, the_plan: Plan) -> None:
    """The backfill graph (docs/architecture.md); every step is a labelled transform."""
    sources = []
    if the_plan.paths:
        sources.append(pipeline | "Read files" >> ReadFiles(the_plan.paths))
    if the_plan.ranges:
        sources.append(pipeline | "Read Kafka range" >> ReadKafkaRange(args.kafka_bootstrap, the_plan.ranges))
    records = (sources
               | "Merge sources" >> beam.Flatten()
               | "Progress read" >> ReportProgress("read", the_plan.expected, args.progress_interval))
    handler = SentimentModelHandler(args.model, args.device, args.precision, batch_size=args.batch_size)
    sentiment_graph(records, the_plan.linking, BatchMode(args, the_plan), handler)


RUN_SETTINGS = "aggregation.json"  # in a --parquet-out directory: the settings its points were computed with


def write_run_settings(out_dir: str, cfg: AggregationConfig) -> None:
    """Record the run's aggregation settings beside its Parquet tables, for a later import into a
    file that already holds items (it recomputes the points the run's items affect)."""
    settings = {"half_lives_s": list(cfg.half_lives_s), "horizon_s": cfg.horizon_s,
                "cadence_s": cfg.cadence_s, "top_k": cfg.top_k}
    with FileSystems.create(f"{out_dir.rstrip('/')}/{RUN_SETTINGS}") as stream:
        stream.write(json.dumps(settings).encode("utf-8"))


def run_settings(out_dir: str, args: argparse.Namespace) -> AggregationConfig:
    """The settings a --parquet-out run recorded, else (an older run's directory) the command's."""
    path = f"{out_dir.rstrip('/')}/{RUN_SETTINGS}"
    if not FileSystems.exists(path):
        return aggregation_config(args)
    with FileSystems.open(path) as stream:
        settings = json.loads(stream.read())
    return AggregationConfig(half_lives_s=tuple(settings["half_lives_s"]), horizon_s=settings["horizon_s"],
                             cadence_s=settings["cadence_s"], top_k=settings["top_k"])


def import_parquet(args: argparse.Namespace) -> dict[str, int]:
    """Load a --parquet-out directory; into a file that already holds items, as a backfill into it
    would land the same rows (pipeline.stored_items.merge_parquet_run)."""
    if not FileSystems.exists(args.import_parquet):
        raise UsageError(f"--import-parquet {args.import_parquet!r} does not exist")
    check_db_path(args.db)
    with DuckDBSink(args.db) as sink:
        try:
            if not sink.con.execute("SELECT EXISTS (SELECT 1 FROM items)").fetchone()[0]:
                return sink.import_parquet(args.import_parquet)
            tables = sink.read_parquet_tables(args.import_parquet)
            return merge_parquet_run(sink, tables, run_settings(args.import_parquet, args))
        except (ValueError, KeyError, duckdb.Error) as exc:  # DuckDB's first line says what; the rest quotes our SQL
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"--import-parquet {args.import_parquet}: nothing imported: {reason}") from None


def run_backfill(argv: list[str]) -> Summary:
    args, beam_args = parse_args(argv)
    options = pipeline_options(beam_args)
    pipeline = make_pipeline(options)
    the_plan = plan(args)
    check_model(args, options)
    if args.parquet_out:
        write_run_settings(args.parquet_out, the_plan.aggregation)
    else:
        check_db_path(args.db)
        with DuckDBSink(args.db) as sink:  # the schema exists even when every record is refused
            holds_items = sink.con.execute("SELECT EXISTS (SELECT 1 FROM items)").fetchone()[0]
        if holds_items:
            the_plan = dataclasses.replace(the_plan, stored_db=args.db)
    started = time.monotonic()
    build(pipeline, args, the_plan)
    result = pipeline.run()
    result.wait_until_finish()
    return Summary(seconds=time.monotonic() - started, **committed_counters(result))


def run(argv: list[str]) -> int:
    quiet_library_logs()
    args, _ = parse_args(argv)
    if args.import_parquet:
        written = import_parquet(args)
        print(f"imported {args.import_parquet} into {args.db}: "
              + ", ".join(f"{count:,} new {table}" for table, count in written.items()))
        return 0
    summary = run_backfill(argv)
    print(summary.line())
    return exit_status("backfill", summary.scored, summary.dead_letters, summary.duplicates)
