"""Flags shared by the backfill and the streaming job, so both read the same settings the same way."""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from connectors.duckdb.schema import not_a_database_file

from models.aggregation import AggregationConfig
from models.aggregation_config import DEFAULT_HALF_LIFE_S
from models.precision import add_precision_args, resolve_precision
from pipeline.cli_args import UsageError, duration_seconds, env_default, env_flag
from pipeline.tickers import Linking, load_aliases


def add_aggregation_args(p: argparse.ArgumentParser) -> None:
    agg = p.add_argument_group("aggregation")
    agg.add_argument("--half-life", action="extend", nargs="+", type=duration_seconds, metavar="DURATION",
                     help=f"one or more half-lives (default {DEFAULT_HALF_LIFE_S / 3600:g}h; env TICKERPULSE_HALF_LIFE=1h,6h)")
    agg.add_argument("--cadence", type=duration_seconds, default=env_default("cadence", "5m"),
                     help="event-time step of ticker_sentiment points (default 5m)")
    agg.add_argument("--horizon", type=duration_seconds, default=env_default("horizon", "3d"),
                     help="items older than this do not count (aggregation and novelty; default 3d)")
    agg.add_argument("--top-k", type=int, default=env_default("top_k", "5"),
                     help="items kept per point as the explanation")


def add_model_args(p: argparse.ArgumentParser, default_batch_size: int) -> None:
    model = p.add_argument_group("model")
    model.add_argument("--model", default=env_default("model"), metavar="PATH",
                       help="checkpoint directory (default: bundled)")
    model.add_argument("--device", default=env_default("device", "auto"), choices=("auto", "cpu", "cuda"))
    model.add_argument("--batch-size", type=int, default=env_default("batch_size", str(default_batch_size)),
                       help=f"largest scoring batch (default {default_batch_size})")
    add_precision_args(model)


# Exit status of a run that stored nothing but dead letters (a CSV without published_at, the
# wrong file, a producer sending garbage): almost certainly not what was meant.
EXIT_ONLY_DEAD_LETTERS = 3
# Exit status of a stream whose DuckDB file was removed, replaced or failed a write while it ran
# (connectors.duckdb.sink.StoreFault): it stopped without committing offsets past what is durable.
EXIT_STORE_FAULT = 4


def exit_status(command: str, scored: int, dead_letters: int, duplicates: int = 0) -> int:
    """0, or EXIT_ONLY_DEAD_LETTERS with a warning on stderr when every record was dead-lettered
    (a rerun whose good records are all stored already stored nothing new, and is not that)."""
    if dead_letters and not scored and not duplicates:
        print(f"tickerpulse {command}: warning: all {dead_letters:,} records were dead-lettered, none stored; "
              "see SELECT reason, count(*) FROM dead_letters GROUP BY ALL", file=sys.stderr)
        return EXIT_ONLY_DEAD_LETTERS
    return 0


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam's options from the flags a command left unparsed. A flag neither the command nor Beam
    knows is a typo, refused as a UsageError (Beam would only log that it dropped it); so is a
    value Beam's own parser refuses (it would print its whole usage first)."""
    options = PipelineOptions(beam_args)
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its "Discarding unparseable args" would be a second line
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    except SystemExit:  # argparse's error(): usage, then "prog: error: <message>"
        lines = usage.getvalue().strip().splitlines() or ["a Beam option has a bad value"]
        raise UsageError(lines[-1].split(": error: ", 1)[-1]) from None
    finally:
        beam_log.setLevel(level)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join('--' + name for name in sorted(unknown))}")
    return options


def quiet_library_logs() -> None:
    """What Beam and kafka-python log that users of backfill and stream need not see."""
    # Beam logs every string annotation it cannot resolve (PEP 563) at INFO: noise for users.
    logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)
    # BatchElements logs its statistics at the end of every bundle: once per poll when streaming.
    logging.getLogger("apache_beam.transforms.util").setLevel(logging.WARNING)
    # kafka-python logs every connection at INFO and every refused one at ERROR; the stream's
    # source logs one clear line per outage instead, a backfill one UsageError.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def check_db_path(db: str) -> None:
    """A --db whose directory does not exist, that this process may not write, or that is not a
    DuckDB file (``not_a_database_file``) is a bad argument, not a DuckDB traceback or a run whose
    rows vanish. The directory must be writable too: DuckDB keeps its write-ahead log beside the file."""
    directory = os.path.dirname(os.path.abspath(db))
    if not os.path.isdir(directory):
        raise UsageError(f"--db {db}: directory {directory} does not exist")
    if os.path.isdir(db):
        raise UsageError(f"--db {db} is a directory, not a DuckDB file")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--db {db}: directory {directory} is not writable")
    if os.path.exists(db) and not os.access(db, os.R_OK | os.W_OK):
        raise UsageError(f"--db {db}: the file is not writable")
    problem = not_a_database_file(db)
    if problem:
        raise UsageError(f"--db {db!r}: {problem}")


# One item can make its ticker emit a point per cadence step across a horizon (a jump in event
# time), so the ratio bounds the work per record; the defaults give 864.
MAX_STEPS_PER_HORIZON = 100_000


def aggregation_config(args: argparse.Namespace) -> AggregationConfig:
    if args.top_k < 0:
        raise UsageError("--top-k must be >= 0")
    if args.horizon / args.cadence > MAX_STEPS_PER_HORIZON:
        raise UsageError(f"--horizon/--cadence gives {args.horizon / args.cadence:,.0f} steps; "
                         f"at most {MAX_STEPS_PER_HORIZON:,}")
    half_lives = args.half_life
    if not half_lives:
        env = env_default("half_life")
        try:
            half_lives = [duration_seconds(h) for h in env.split(",")] if env else None
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"TICKERPULSE_HALF_LIFE: {exc}") from None
    try:
        return AggregationConfig(half_lives_s=tuple(half_lives or AggregationConfig().half_lives_s),
                                 horizon_s=args.horizon, cadence_s=args.cadence, top_k=args.top_k)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def add_linking_args(p: argparse.ArgumentParser) -> None:
    link = p.add_argument_group("tickers (docs/companies.md)")
    link.add_argument("--alias-csv", default=env_default("alias_csv"), metavar="CSV",
                      help="alias,ticker rows: your own company names, extending and overriding the default table")
    link.add_argument("--default-companies", action=argparse.BooleanOptionalAction,
                      default=env_flag("default_companies", True),
                      help="link the ~1,800 listed companies of the shipped table by name (default on)")


def linking(args: argparse.Namespace) -> Linking:
    try:
        aliases = load_aliases(args.alias_csv) if args.alias_csv else {}
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    return Linking(aliases=aliases, default_companies=args.default_companies)


def check_model(args: argparse.Namespace, options: PipelineOptions) -> None:
    """On the local runner, a --model that is not a model directory or --device cuda without a
    GPU is refused before the job starts (the worker would fail with tracebacks). Another
    runner's workers may have what this machine lacks, so there it is theirs to check."""
    if options.view_as(StandardOptions).runner is not None:
        return
    from models.classifier import ModelLoadError, model_dir
    from models.engine import resolve_device

    try:
        model_dir(args.model)
        resolve_device(args.device)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from None


def check_precision(args: argparse.Namespace) -> None:
    """int8 on an explicit CUDA device is refused before the job starts (a worker would fail later)."""
    try:
        resolve_precision(args.precision, "cuda" if args.device == "cuda" else "cpu")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
