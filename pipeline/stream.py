"""``tickerpulse stream``: the continuous job, Kafka -> scores -> DuckDB, resuming where it stopped.

    python run_pipeline.py stream --bootstrap-servers localhost:9092 --topics news comments \\
        --group-id tickerpulse --db tp.duckdb --half-life 1h 6h
    python run_pipeline.py stream ... --until-idle 30s      # catch up, then exit
    python run_pipeline.py stream ... --metrics-port 9108   # Prometheus at :9108/metrics
    python run_pipeline.py stream --role score|store ...    # the scale-out (docs/architecture.md)

Delivery: a Kafka offset is committed only after the rows it covers are in DuckDB, and every
write is idempotent, so a crash anywhere replays at most the uncommitted records and duplicates
nothing. SIGINT/SIGTERM stop the source, flush, commit and exit 0. App flags are parsed here;
the rest are Beam flags (one that neither knows is refused, exit 2); locally the runner is
FnApiRunner unless ``--runner`` names another. A DuckDB file removed, replaced or failing a
write while the job runs stops it with one line, exit 4, before any further offset commit.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from connectors.duckdb.sink import DuckDBSink, StoreFault, memory_limit
from connectors.kafka.offsets import BrokerLag, OffsetCommitter, forget_ledger, ledger_for
from connectors.kafka.producer import Publisher
from connectors.kafka.relay import RelayLedger
from connectors.kafka.source import KafkaSourceConfig, ReadFromKafka, RunControl, forget_run, run_control
from models.aggregation import AggregationConfig
from pipeline.cli_args import UsageError, command_parser, duration_seconds, env_default, fill_list_env_defaults
from pipeline.metrics import PeriodicLogger, StreamMetrics, serve_prometheus
from pipeline.job_args import (add_aggregation_args, add_linking_args, add_model_args, aggregation_config,
                               EXIT_STORE_FAULT, check_db_path, check_precision, exit_status, linking,
                               pipeline_options)
from pipeline import store
from pipeline.scaleout_args import add_role_args, check_role
from pipeline.scoring import SentimentModelHandler
from pipeline.stream_state import rebuild_state
from pipeline.stream_graph import land, parse_and_link
from pipeline.stream_transforms import StreamRun, WriteStream, register_run, unregister_run
from pipeline.tickers import Linking

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = command_parser("stream", "Continuous job: Kafka -> scores -> DuckDB; resumes from committed offsets.")
    kafka = p.add_argument_group("Kafka")
    kafka.add_argument("--bootstrap-servers", default=env_default("bootstrap_servers"), metavar="HOST:PORT[,..]")
    kafka.add_argument("--topics", action="extend", nargs="+", metavar="TOPIC")
    kafka.add_argument("--group-id", default=env_default("group_id", "tickerpulse"),
                       help="consumer group whose committed offsets say where to resume (default tickerpulse)")
    kafka.add_argument("--until-idle", type=duration_seconds, default=env_default("until_idle"), metavar="DURATION",
                       help="exit cleanly once no record arrived for this long (catch-up runs)")
    kafka.add_argument("--max-poll-records", type=int, default=env_default("max_poll_records", "500"),
                       help="records read per partition per poll: the most one bundle carries (default 500)")
    kafka.add_argument("--spare-partitions", type=int, default=env_default("spare_partitions", "8"),
                       help="partitions that may be added per topic while running (default 8)")
    out = p.add_argument_group("sink")
    out.add_argument("--db", default=env_default("db", "tickerpulse.duckdb"), help="DuckDB file (this job is its writer)")
    out.add_argument("--snapshot-interval", type=duration_seconds, default=env_default("snapshot_interval", "5s"),
                     help="publish a read-only snapshot for query/dashboard this often (default 5s)")
    out.add_argument("--duckdb-memory-limit", type=_memory_limit, default=env_default("duckdb_memory_limit"),
                     metavar="SIZE", help="cap DuckDB's buffer cache, e.g. 512MB or 10%% (default: DuckDB's, 80%% of RAM)")
    add_aggregation_args(p)
    p.add_argument("--allowed-lateness", type=duration_seconds, default=env_default("allowed_lateness"),
                   metavar="DURATION",
                   help="an item this much older than its ticker's latest point still restates the points "
                        "it changes; an older one is stored and counted as late (default: the horizon)")
    add_model_args(p, 64)
    add_linking_args(p)
    add_role_args(p)
    obs = p.add_argument_group("observability")
    obs.add_argument("--metrics-port", type=int, default=env_default("metrics_port"),
                     help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (off by default)")
    obs.add_argument("--metrics-interval", type=duration_seconds, default=env_default("metrics_interval", "5s"),
                     help="log a progress line this often (default 5s)")
    return p


def _memory_limit(text: str) -> str:
    try:
        return memory_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check(args: argparse.Namespace) -> AggregationConfig:
    if not args.bootstrap_servers:
        raise UsageError("--bootstrap-servers is required (or TICKERPULSE_BOOTSTRAP_SERVERS)")
    if not args.topics:
        raise UsageError("--topics is required (one or more)")
    if args.batch_size < 1 or args.max_poll_records < 1 or args.spare_partitions < 0:
        raise UsageError("--batch-size and --max-poll-records must be >= 1, --spare-partitions >= 0")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise UsageError(f"--metrics-port must be a TCP port, not {args.metrics_port}")
    check_precision(args)
    check_role(args)
    return aggregation_config(args)


def build(pipeline: beam.Pipeline, args: argparse.Namespace, source: KafkaSourceConfig, links: Linking) -> None:
    """The streaming graph: no Flatten or GroupByKey on the local path, so it fuses into one stage."""
    run_id = source.run_id
    items, parse_dead = parse_and_link(pipeline | "Read Kafka" >> ReadFromKafka(source), links)
    handler = SentimentModelHandler(args.model, args.device, args.precision, batch_size=args.batch_size)
    score_dead = land(items, run_id, handler)
    _ = parse_dead | "Write parse dead letters" >> WriteStream(run_id, "dead_letters")
    _ = score_dead | "Write score dead letters" >> WriteStream(run_id, "dead_letters")


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    if options.view_as(StandardOptions).runner is not None:
        return beam.Pipeline(options=options)
    _consolidate_runner_metrics_eagerly()
    return beam.Pipeline(runner=FnApiRunner(), options=options)


def _consolidate_runner_metrics_eagerly() -> None:
    """Work around a memory leak of FnApiRunner (apache-beam 2.77) in unbounded runs.

    After every bundle the runner sets its per-stage metrics to
    ``consolidate_monitoring_infos(chain(new, previous))``, which is a generator: nothing is ever
    merged, and each bundle's generator holds the previous one and that bundle's protobuf
    response. A batch job runs few bundles; a stream runs several per second, and the chain grew
    the job by ~22 KB per record at 50 records/s (native protobuf memory, invisible to
    tracemalloc). Consolidating into a list keeps one merged set of metrics per stage: with the
    source alone, malloc'd memory stayed flat from 750 to 5,000 records, against +22 MB per
    1,000 records without.
    """
    from apache_beam.metrics import monitoring_infos
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    fn_runner.consolidate_monitoring_infos = lambda infos: list(monitoring_infos.consolidate(infos))


@contextmanager
def observed(args: argparse.Namespace, metrics: StreamMetrics, broker_lag: BrokerLag,
             every_second: Callable[[], object], close: Callable[[], object]) -> Iterator[None]:
    """A job's lifetime around its pipeline: Prometheus (with --metrics-port), the broker-lag poller
    and the progress line (which also runs ``every_second``); at the end ``close`` (the final
    commit) runs after the progress line stops and before the lag is read for the last line."""
    stop_metrics_server = serve_prometheus(metrics, args.metrics_port) if args.metrics_port else None
    broker_lag.start()
    progress = PeriodicLogger(metrics, args.metrics_interval, every_second=every_second).start()
    try:
        yield
    finally:
        progress.stop()
        try:
            close()
        finally:
            broker_lag.stop()
            broker_lag.refresh()  # the lag after the final commit, for the last line
            broker_lag.close()
            if stop_metrics_server:
                stop_metrics_server()


@contextmanager
def stop_on_signals(control: RunControl) -> Iterator[None]:
    """SIGINT/SIGTERM end the source; the job then flushes, commits and exits 0."""
    def handler(signum: int, _frame: object) -> None:
        log.warning("%s received: finishing the current records, committing offsets, stopping",
                    signal.Signals(signum).name)
        control.request_stop()

    if threading.current_thread() is not threading.main_thread():
        yield  # embedded in another thread: only the main thread may set signal handlers
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_stream(argv: list[str]) -> StreamMetrics:
    args, beam_args = parser().parse_known_args(argv)
    fill_list_env_defaults(args, "topics")
    cfg = check(args)
    options = pipeline_options(beam_args)
    links = linking(args)
    if args.role == "score":
        from pipeline.score_worker import run_worker  # it builds on this module

        return run_worker(args, options, links)
    check_db_path(args.db)
    run_id = f"stream-{uuid.uuid4()}"
    source = KafkaSourceConfig(args.bootstrap_servers, args.group_id, tuple(args.topics), run_id,
                               until_idle_s=args.until_idle, max_records=args.max_poll_records,
                               spare_partitions=args.spare_partitions)
    control = run_control(run_id, args.until_idle)
    ledger = ledger_for(run_id)
    broker_lag = BrokerLag(args.bootstrap_servers, args.group_id, tuple(args.topics))
    metrics = StreamMetrics(consumed=lambda: control.consumed, lag=lambda: broker_lag.value)
    sink_options = dict(snapshot_interval_s=args.snapshot_interval, memory_limit=args.duckdb_memory_limit)
    if args.role == "store":
        points = Publisher(args.bootstrap_servers, args.points_topic, client_id="tickerpulse-points")
        sink = store.PublishingSink(args.db, points, **sink_options)
    else:
        sink = DuckDBSink(args.db, **sink_options)
    state, replayed, points = rebuild_state(sink, cfg, args.allowed_lateness)
    if replayed:
        sink.write(points=points)
        log.info("resumed state from %s: %d items replayed, %d tickers, %d open points recomputed",
                 args.db, replayed, len(state.tickers), len(points))
    committer = OffsetCommitter(args.bootstrap_servers, args.group_id, ledger, before_commit=sink.check_file)
    # The store acknowledges a scored record by its item's origin (connectors.kafka.relay).
    stream = StreamRun(sink, RelayLedger(ledger) if args.role == "store" else ledger, committer, metrics, state,
                       on_fault=control.request_stop)
    register_run(run_id, stream)
    try:
        # close: the final commit of what is durable, a snapshot, the file closed
        with observed(args, metrics, broker_lag, every_second=stream.commit_due, close=stream.close), \
                stop_on_signals(control):
            pipeline = make_pipeline(options)
            (store.build if args.role == "store" else build)(pipeline, args, source, links)
            pipeline.run().wait_until_finish()
    except Exception:
        if stream.fault is None:  # a store fault explains whatever else failed after it
            raise
    finally:
        unregister_run(run_id)
        forget_ledger(run_id)
        forget_run(run_id)
    if stream.fault is not None:
        raise stream.fault
    log.info(metrics.line())
    return metrics


def quiet_library_logs() -> None:
    # Beam logs every string annotation it cannot resolve (PEP 563) at INFO: noise for users.
    logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)
    # BatchElements logs its statistics at the end of every bundle: once per poll when streaming.
    logging.getLogger("apache_beam.transforms.util").setLevel(logging.WARNING)
    # kafka-python logs every connection at INFO and every refused one at ERROR; the source logs
    # one clear line per outage instead.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def run(argv: list[str]) -> int:
    quiet_library_logs()
    try:
        metrics = run_stream(argv)
    except StoreFault as exc:
        print(f"tickerpulse stream: error: {exc}; stopped before committing offsets past the last "
              "durable write (the next run replays the rest)", file=sys.stderr)
        return EXIT_STORE_FAULT
    print(f"stream stopped: {metrics.line().removeprefix('stream: ')}")
    return exit_status("stream", metrics.scored, metrics.dead_lettered)
