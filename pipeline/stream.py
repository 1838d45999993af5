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
import functools
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from connectors.duckdb.sink import StoreFault, memory_limit
from connectors.kafka.source import KafkaSourceConfig, ReadFromKafka
from models.aggregation import AggregationConfig
from pipeline.cli_args import UsageError, command_parser, duration_seconds, env_default, fill_list_env_defaults
from pipeline.metrics import StreamMetrics, WorkerCounts
from pipeline.job_args import (add_aggregation_args, add_linking_args, add_model_args, aggregation_config,
                               EXIT_STORE_FAULT, check_db_path, check_model, check_precision, exit_status, linking,
                               pipeline_options, quiet_library_logs)
from pipeline import store
from pipeline.run_handle import Observing, RunHandle, SharedRun
from pipeline.runner import make_pipeline, runs_here
from pipeline.scaleout_args import add_role_args, check_role
from pipeline.scoring import DEFAULT_BATCH_SIZE, SentimentModelHandler
from pipeline.graph import sentiment_graph
from pipeline.stream_transforms import StreamMode, StreamRun, StreamSettings
from pipeline.tickers import Linking
from pipeline.transforms import committed_counters

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
    out.add_argument("--snapshot-interval", type=duration_seconds, default=env_default("snapshot_interval", "1s"),
                     help="publish a read-only snapshot for query/dashboard this often (default 1s)")
    out.add_argument("--duckdb-memory-limit", type=_memory_limit, default=env_default("duckdb_memory_limit"),
                     metavar="SIZE", help="cap DuckDB's buffer cache, e.g. 512MB or 10%% (default: DuckDB's, 80%% of RAM)")
    add_aggregation_args(p)
    p.add_argument("--allowed-lateness", type=duration_seconds, default=env_default("allowed_lateness"),
                   metavar="DURATION",
                   help="an item this much older than its ticker's latest point still restates the points "
                        "it changes; an older one is stored and counted as late (default: the horizon)")
    add_model_args(p, DEFAULT_BATCH_SIZE)
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


def build(pipeline: beam.Pipeline, args: argparse.Namespace, source: KafkaSourceConfig, links: Linking,
          handle: RunHandle[StreamRun]) -> None:
    """The streaming graph: no Flatten or GroupByKey on the local path, so it fuses into one stage."""
    handler = SentimentModelHandler(args.model, args.device, args.precision, batch_size=args.batch_size)
    sentiment_graph(pipeline | "Read Kafka" >> ReadFromKafka(source, handle), links, StreamMode(handle), handler)


def observing(args: argparse.Namespace) -> Observing:
    """What every role's run reports on, from the command line."""
    return Observing(args.bootstrap_servers, args.group_id, tuple(args.topics), args.metrics_port,
                     args.metrics_interval)


def settings(args: argparse.Namespace, cfg: AggregationConfig) -> StreamSettings:
    common = dict(db=args.db, cfg=cfg, observing=observing(args), until_idle_s=args.until_idle,
                  allowed_lateness_s=args.allowed_lateness, snapshot_interval_s=args.snapshot_interval,
                  memory_limit=args.duckdb_memory_limit)
    if args.role == "store":
        return store.StoreSettings(**common, points_topic=args.points_topic)
    return StreamSettings(**common)


@contextmanager
def stop_on_signals(stop: Callable[[], object], doing: str) -> Iterator[None]:
    """SIGINT/SIGTERM call ``stop`` (what it does is logged as ``doing``)."""
    def handler(signum: int, _frame: object) -> None:
        log.warning("%s received: %s", signal.Signals(signum).name, doing)
        stop()

    if threading.current_thread() is not threading.main_thread():
        yield  # embedded in another thread: only the main thread may set signal handlers
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_stream(argv: list[str]) -> StreamMetrics | WorkerCounts:
    """Run the job until stopped (or idle); returns its counters, or None where the runner's
    workers ran it (they log their own)."""
    args, beam_args = parser().parse_known_args(argv)
    fill_list_env_defaults(args, "topics")
    cfg = check(args)
    options = pipeline_options(beam_args)
    check_one_local_worker(options)
    links = linking(args)
    if args.role != "store":  # the store role scores nothing
        check_model(args, options)
    if args.role == "score":
        from pipeline.score_worker import run_worker  # it builds on this module

        return run_worker(args, options, links)
    check_db_path(args.db)
    source = KafkaSourceConfig(args.bootstrap_servers, args.group_id, tuple(args.topics),
                               max_records=args.max_poll_records,
                               spare_partitions=args.spare_partitions)
    handle = RunHandle(functools.partial(StreamRun.open, settings(args, cfg)), f"stream-{uuid.uuid4()}")
    if args.role == "store":
        graph = functools.partial(store.build, source=source, handle=handle)
    else:
        graph = functools.partial(build, args=args, source=source, links=links, handle=handle)
    return run_job(options, handle, graph)


def check_one_local_worker(options: PipelineOptions) -> None:
    """The local runner with parallel bundles (Beam 2.77) drops each Kafka reader's remainder, so
    the continuous job would end after its first poll, exit 0, with the rest unread (tested)."""
    workers = options.view_as(DirectOptions).direct_num_workers
    if options.view_as(StandardOptions).runner is None and workers != 1:
        raise UsageError(f"--direct_num_workers={workers}: the local stream runs one worker "
                         "(more would stop it after one poll); scale out with --role score workers")


def run_job(options: PipelineOptions, handle: RunHandle,
            graph: Callable[[beam.Pipeline], None]) -> StreamMetrics | WorkerCounts:
    """Build and run a streaming graph whose steps share ``handle``'s run.

    Here (the local runner) this process is the worker: it opens the run first, so SIGINT/SIGTERM
    can stop its source (the job then flushes, commits and exits 0), and closes it after; an error
    the run recorded (a store fault) is raised then, since it explains whatever else failed after
    it. On another runner its workers open and close the run, a signal cancels the job, and what
    comes back is the runner's counters.
    """
    pipeline = make_pipeline(options)
    graph(pipeline)
    if not runs_here(options):
        result = pipeline.run()
        with stop_on_signals(result.cancel, "cancelling the job (its workers commit only what is durable)"):
            result.wait_until_finish()
        counts = committed_counters(result)
        return WorkerCounts(counts["read"], counts["scored"], counts["dead_letters"])
    run: SharedRun = handle.attach()
    try:
        with stop_on_signals(run.control.request_stop, "finishing the current records, committing offsets, stopping"):
            pipeline.run().wait_until_finish()
    except Exception:
        if run.fault is None:
            raise
    finally:
        run.close()
    if run.fault is not None:
        raise run.fault
    return run.metrics


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
