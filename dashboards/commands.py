"""The read-side commands: ``query``, ``trend`` and ``dashboard`` (docs/sql.md, docs/dashboard.md).

Each opens the database with ``open_for_read``, so it works while a streaming job writes the file
(it then reads the newest snapshot and says how old its data is, on stderr), installs the macros
and locks the connection down (``connectors.duckdb.sandbox``): no file system, no other database.
"""
from __future__ import annotations

import csv
import ipaddress
import json
import re
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import TextIO

import duckdb

from connectors.duckdb.sandbox import Refused, lock_down, single_statement
from connectors.duckdb.schema import not_a_database_file
from connectors.duckdb.snapshot import ReadConnection, open_for_read
from dashboards.sql import install_trend_sql, trend_series
from models.aggregation_config import DEFAULT_HALF_LIFE_S
from pipeline.cli_args import UsageError, command_parser, duration_seconds, env_default
from pipeline.tickers import InvalidTicker, canonical_ticker

FORMATS = ("table", "csv", "json")
MAX_SINCE_S = 100 * 365 * 86400.0  # a window start must stay a representable time


def _add_db(parser) -> None:
    parser.add_argument("--db", default=env_default("db"), required=env_default("db") is None,
                        help="DuckDB file written by backfill/stream (env TICKERPULSE_DB)")


def _open(db: str) -> ReadConnection:
    problem = not_a_database_file(db)
    if problem:
        raise UsageError(f"--db {db!r}: {problem}")
    try:
        reader = open_for_read(db)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    if reader.is_snapshot:
        print(f"reading snapshot {reader.path} (data {reader.age_s:.1f} s old): a writer holds {db}",
              file=sys.stderr)
    install_trend_sql(reader.con)
    lock_down(reader.con)
    return reader


# C0 and C1 control characters, DEL, and the bidirectional overrides that reorder what a
# terminal shows: printed escaped in tables, so a stored text cannot drive the reader's terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: _NAMED_ESCAPES.get(m.group(), m.group().encode("unicode_escape").decode()), text)


def _utc(value: datetime) -> datetime:
    """A TIMESTAMPTZ in UTC; a naive TIMESTAMP as it is (it has no zone to convert from)."""
    return value.astimezone(timezone.utc) if value.tzinfo else value


def _text(value: object) -> str:
    """A table cell: floats rounded to 4 places, times in UTC to the second, with the stored
    fraction (µs) when there is one, so different times never print the same."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        value = _utc(value)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S")
    return str(value)


def _stored(value: object) -> object:
    """A CSV cell, as stored: a float as its shortest round-trip repr (``float(cell) == value``),
    a time as ISO-8601 in UTC with its fraction and zone (like JSON)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    return value


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def write_result(columns: Sequence[str], rows: Sequence[tuple], fmt: str, out: TextIO) -> None:
    """Print rows as an aligned table (rounded for reading, ``_text``), or as stored: CSV
    (``_stored``) or a JSON array of objects."""
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_stored(v) for v in row] for row in rows])
    elif fmt == "json":
        json.dump([{c: _json_value(v) for c, v in zip(columns, row)} for row in rows], out, indent=1)
        out.write("\n")
    else:
        cells = [[escape_controls(c) for c in columns]] + [[escape_controls(_text(v)) for v in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out.write("\n".join(lines) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def query(argv: list[str]) -> int:
    """``query --db PATH "SQL" [--format table|csv|json]``: one read-only statement, macros installed,
    no file system or other database (a refusal is one line, exit 2)."""
    parser = command_parser("query", "Run SQL against a TickerPulse DuckDB file (docs/sql.md).")
    _add_db(parser)
    parser.add_argument("sql", help="the SQL to run; the trend macros of docs/sql.md are installed")
    parser.add_argument("--format", choices=FORMATS, default=env_default("format", "table"))
    args = parser.parse_args(argv)
    with _open(args.db) as reader:
        try:
            result = reader.con.execute(single_statement(reader.con, args.sql))
        except Refused as exc:
            raise UsageError(str(exc)) from exc
        except duckdb.Error as exc:
            raise UsageError(f"SQL failed: {str(exc).splitlines()[0]}") from exc
        columns = [d[0] for d in result.description] if result.description else []
        write_result(columns, result.fetchall() if columns else [], args.format, sys.stdout)
    return 0


def _until(text: str) -> datetime | str:
    if text in ("now", "latest"):
        return text
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--until: not a time: {text[:64]!r} (use now, latest or ISO-8601)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def trend(argv: list[str]) -> int:
    """``trend --ticker AAPL --since 24h --bucket 15m --half-life 2h``: one ticker's series."""
    parser = command_parser("trend", "Sentiment of one ticker by time bucket: recency-weighted and plain mean.")
    _add_db(parser)
    parser.add_argument("--ticker", required=True, help="e.g. AAPL (case-insensitive)")
    parser.add_argument("--since", type=duration_seconds, default=env_default("since", "24h"),
                        help="window length before --until (default 24h)")
    parser.add_argument("--until", default=env_default("until", "now"),
                        help="end of the window: now (default), latest (the ticker's newest item) or ISO-8601")
    parser.add_argument("--bucket", type=duration_seconds, default=env_default("bucket", "15m"),
                        help="bucket width (default 15m)")
    parser.add_argument("--half-life", type=duration_seconds, default=env_default("half_life", f"{DEFAULT_HALF_LIFE_S:g}s"),
                        help=f"half-life of the recency weighting (default {DEFAULT_HALF_LIFE_S / 3600:g}h)")
    parser.add_argument("--format", choices=FORMATS, default=env_default("format", "table"))
    args = parser.parse_args(argv)
    try:
        ticker = canonical_ticker(args.ticker)  # GOOG -> GOOGL, as ingestion stores it
    except InvalidTicker as exc:
        raise UsageError(f"--ticker: {exc}") from None
    if args.since / args.bucket > 10_000:
        raise UsageError(f"--since/--bucket gives {args.since / args.bucket:.0f} buckets; at most 10000")
    if args.since > MAX_SINCE_S:
        raise UsageError(f"--since: at most {MAX_SINCE_S // 86400:.0f} days")
    until = _until(args.until)
    with _open(args.db) as reader:
        newest = reader.con.execute(
            "SELECT max(i.ts) FROM items i JOIN item_tickers t ON t.item_id = i.id WHERE t.ticker = ?",
            [ticker]).fetchone()[0]
        if newest is None:
            written = args.ticker.strip().lstrip("$").upper()
            stored_as = f" (stored as {ticker})" if ticker != written else ""
            raise UsageError(f"no items for ticker {written}{stored_as} in {args.db}")
        if until == "latest":
            until = newest
        elif until == "now":
            until = datetime.now(timezone.utc)
        since = until - timedelta(seconds=args.since)
        columns, rows = trend_series(reader.con, ticker, since, until, args.bucket, args.half_life)
        write_result(columns, rows, args.format, sys.stdout)
        if newest < since:
            print(f"note: {ticker}'s newest item is {_text(newest)} UTC, before this window; "
                  "try --until latest", file=sys.stderr)
    return 0


def dashboard(argv: list[str]) -> int:
    """``dashboard --db PATH [--port 8050] [--host 127.0.0.1]``: serve the live dashboard."""
    parser = command_parser("dashboard", "Serve the live TickerPulse dashboard (docs/dashboard.md).")
    _add_db(parser)
    parser.add_argument("--host", default=env_default("host", "127.0.0.1"),
                        help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=env_default("port", "8050"))
    parser.add_argument("--refresh", type=duration_seconds, default=env_default("refresh", "5s"),
                        help="how often the page re-reads the database (default 5s)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535: {args.port}")
    with _open(args.db):  # fail here, with one line, rather than on the first page load
        pass
    from dashboards.app import create_app

    app = create_app(args.db, refresh_s=args.refresh)
    print(f"TickerPulse dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr)
    try:  # localhost, 127.0.0.0/8 and ::1 reach this machine only; a host name may resolve to anything
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print(f"warning: --host {args.host} serves the dashboard beyond this machine, and it has no login: "
              f"anyone who can reach port {args.port} can read {args.db}", file=sys.stderr)
    app.run(host=args.host, port=args.port, debug=False)
    return 0
