"""``tickerpulse demo``: the whole product in one command, on a fresh machine.

    python run_pipeline.py demo                                   # embedded broker, ./tickerpulse-demo.duckdb
    python run_pipeline.py demo --bootstrap-servers localhost:9092 --db /tmp/demo.duckdb

Starts a local Kafka-protocol broker (``noida-db``) on a free port with a temporary data
directory, unless ``--bootstrap-servers`` names an existing Kafka; creates the topics ``news``
and ``comments``; replays the shipped corpus (pipeline/demo_data); runs the streaming job until
it has caught up; prints each ticker's latest recency-weighted sentiment next to its plain mean
and its change over the last 2 hours (blank when the ticker had no value 2 hours earlier;
``latest_sentiment`` defines it);
says how to query the file and open the dashboard; stops the broker.
"""
from __future__ import annotations

import argparse
import logging
import uuid
from contextlib import ExitStack
from importlib.resources import files
from pathlib import Path

import duckdb
from kafka import KafkaProducer
from kafka.errors import KafkaError

from connectors.kafka.embedded import EmbeddedBroker, create_topics
from models.aggregation_config import DEFAULT_HALF_LIFE_S
from pipeline import stream
from pipeline.cli_args import UsageError, command_parser, duration_seconds, env_default
from pipeline.job_args import check_db_path

log = logging.getLogger(__name__)

TOPICS = {"news": "news.jsonl", "comments": "comments.jsonl"}
TURN_THRESHOLD = -0.75  # a 2-hour drop of the weighted sentiment worth pointing at
CADENCE_S = 300  # the grid the demo's stream writes; divides CHANGE_S, so t - 2h is a grid point
CHANGE_S = 7200  # "2h change"


def parser() -> argparse.ArgumentParser:
    p = command_parser("demo", "Replay the sample corpus through a local broker and the streaming job.")
    p.add_argument("--bootstrap-servers", default=env_default("demo_bootstrap_servers"), metavar="HOST:PORT",
                   help="use this Kafka instead of starting an embedded broker")
    p.add_argument("--db", default=env_default("demo_db", "tickerpulse-demo.duckdb"),
                   help="DuckDB file to write (default ./tickerpulse-demo.duckdb)")
    p.add_argument("--half-life", type=duration_seconds, default=env_default("demo_half_life", f"{DEFAULT_HALF_LIFE_S:g}s"),
                   help=f"half-life computed and shown (default {DEFAULT_HALF_LIFE_S / 3600:g}h)")
    p.add_argument("--until-idle", type=duration_seconds, default=env_default("demo_until_idle", "5s"),
                   help="the stream stops once caught up and idle this long (default 5s)")
    return p


def corpus_lines(name: str) -> list[bytes]:
    """One record per line, bytes exactly as shipped (malformed lines included on purpose)."""
    return [line for line in files("pipeline").joinpath("demo_data", name).read_bytes().split(b"\n") if line]


def replay_corpus(bootstrap: str) -> int:
    """Create the topics and produce the shipped corpus into them; returns the record count."""
    create_topics(bootstrap, list(TOPICS))
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        count = 0
        for topic, name in TOPICS.items():
            for line in corpus_lines(name):
                producer.send(topic, line)
                count += 1
        producer.flush()
        return count
    finally:
        producer.close()


def latest_sentiment(db: str, half_life_s: float, cadence_s: float = CADENCE_S) -> list[tuple]:
    """Per ticker: latest as-of time t (formatted in UTC whatever the process's time zone),
    recency-weighted sentiment, plain mean, items, and the "2h change".

    The 2h change is S(t) - S(t - 2h): the weighted value at t minus the ticker's value as of
    t - 2h, which is its stored point in (t - 2h - cadence, t - 2h], the grid point that observes
    t - 2h. The demo's cadence (5 min) divides 2 h, so that is the point at exactly t - 2h; it is
    stored exactly when the ticker had items inside the horizon then (``sentiment_asof(ticker,
    t - 2h, ...)`` returns a row). When there is none the change is None (printed blank): an
    older point, from before a gap, is not the value 2 hours earlier."""
    con = duckdb.connect(db, read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")  # strftime formats a TIMESTAMPTZ in the session's zone
        return con.execute("""
            WITH series AS (
                SELECT ticker, ts, sentiment, mean_score, n_items,
                       row_number() OVER (PARTITION BY ticker ORDER BY ts DESC) AS newest_first
                FROM ticker_sentiment WHERE half_life_s = $half_life)
            SELECT s.ticker, strftime(s.ts, '%Y-%m-%d %H:%M'), s.sentiment, s.mean_score, s.n_items,
                   s.sentiment - (SELECT e.sentiment FROM series e
                                  WHERE e.ticker = s.ticker
                                    AND e.ts <= s.ts - to_microseconds($change_us)
                                    AND e.ts > s.ts - to_microseconds($change_us + $cadence_us)
                                  ORDER BY e.ts DESC LIMIT 1)
            FROM series s WHERE newest_first = 1 ORDER BY s.sentiment DESC""",
            {"half_life": half_life_s, "change_us": CHANGE_S * 1_000_000,
             "cadence_us": round(cadence_s * 1_000_000)}).fetchall()
    finally:
        con.close()


def table_counts(db: str) -> dict[str, int]:
    con = duckdb.connect(db, read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("items", "dead_letters", "ticker_sentiment")}
    finally:
        con.close()


def render(rows: list[tuple], half_life_s: float) -> str:
    hl = f"{half_life_s / 3600:g}h" if half_life_s >= 3600 else f"{half_life_s / 60:g}m"
    header = f"{'ticker':<7}{'as of (UTC)':<18}{'weighted':>9}{'mean':>8}{'items':>7}{'2h change':>11}"
    lines = [f"Latest sentiment per ticker (recency-weighted, half-life {hl}, vs plain mean; -1..1)", header]
    for ticker, as_of, weighted, mean, n, change in rows:
        delta = "" if change is None else f"{change:+.2f}"
        turned = "  <- turned down" if change is not None and change <= TURN_THRESHOLD else ""
        lines.append(f"{ticker:<7}{as_of:<18}{weighted:>+9.2f}{mean:>+8.2f}{n:>7}{delta:>11}{turned}")
    return "\n".join(lines)


def next_steps(db: str, turned: str | None) -> str:
    ticker = turned or "AAPL"
    return "\n".join([
        "",
        "Query it (SQL over items, item_tickers, ticker_sentiment, dead_letters; docs/sql.md):",
        f"  python run_pipeline.py query --db {db} \"SELECT ticker, count(*) FROM item_tickers GROUP BY ALL ORDER BY 2 DESC\"",
        f"  python run_pipeline.py trend --db {db} --ticker {ticker} --until latest --since 7h --bucket 30m --half-life 1h",
        f"  python run_pipeline.py query --db {db} \"SELECT raw, reason, source_location FROM dead_letters\"",
        "Open the dashboard:",
        f"  python run_pipeline.py dashboard --db {db}    # then http://127.0.0.1:8050",
    ])


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    stream.quiet_library_logs()
    db = str(Path(args.db))
    check_db_path(db)
    with ExitStack() as stack:
        bootstrap = args.bootstrap_servers
        if not bootstrap:
            broker = EmbeddedBroker().start()
            stack.callback(broker.close)
            bootstrap = broker.bootstrap_servers
            print(f"Started an embedded Kafka-protocol broker on {bootstrap} (stopped at the end).")
        try:
            produced = replay_corpus(bootstrap)
        except KafkaError as exc:
            raise UsageError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
        print(f"Replayed {produced} records into topics {', '.join(TOPICS)}; streaming them into {db} ...")
        # A fresh consumer group reads the topics from the start; the sink skips ids already stored.
        stream.run_stream(["--bootstrap-servers", bootstrap, "--topics", *TOPICS,
                           "--group-id", f"tickerpulse-demo-{uuid.uuid4().hex[:8]}", "--db", db,
                           "--half-life", f"{args.half_life}s", "--cadence", f"{CADENCE_S}s",
                           "--until-idle", f"{args.until_idle}s"])
    counts = table_counts(db)
    print(f"\nCaught up: {counts['items']} items, {counts['dead_letters']} dead letters, "
          f"{counts['ticker_sentiment']} sentiment points in {db}\n")
    rows = latest_sentiment(db, args.half_life)
    print(render(rows, args.half_life))
    turned = min(((r[5], r[0]) for r in rows if r[5] is not None), default=(None, None))[1]
    print(next_steps(db, turned))
    return 0
