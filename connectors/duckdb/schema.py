"""The DuckDB schema: the SQL contract users write queries against (docs/sql.md).

Every table has a natural key so that re-running a backfill, or replaying a Kafka range after
a crash, inserts nothing twice (``INSERT ... ON CONFLICT DO NOTHING`` / ``DO UPDATE``).
"""
from __future__ import annotations

import duckdb

SCHEMA_VERSION = 2  # 2: item_tickers.link

DDL = """
CREATE TABLE IF NOT EXISTS items (
    id              VARCHAR PRIMARY KEY,   -- given id, else sha256 of the content
    ts              TIMESTAMPTZ NOT NULL,  -- event time: published_at, else Kafka timestamp
    source          VARCHAR NOT NULL,      -- news, comment, ...
    text            VARCHAR NOT NULL,
    url             VARCHAR,
    author          VARCHAR,
    lang            VARCHAR,
    text_key        VARCHAR NOT NULL,      -- hash of the normalised text: near-duplicates share it
    novelty_n       INTEGER NOT NULL,      -- earlier items with the same text_key inside the horizon
    label           VARCHAR NOT NULL,      -- negative | neutral | positive
    score           DOUBLE NOT NULL,       -- P(positive) - P(negative), in [-1, 1]
    prob_negative   DOUBLE NOT NULL,
    prob_neutral    DOUBLE NOT NULL,
    prob_positive   DOUBLE NOT NULL,
    confidence      DOUBLE NOT NULL,       -- max probability
    relevance       DOUBLE NOT NULL,       -- r_i of the aggregation attention (docs/aggregation.md)
    model           VARCHAR NOT NULL,      -- model name and version that scored it
    ingested_at     TIMESTAMPTZ NOT NULL,
    kafka_topic     VARCHAR,
    kafka_partition INTEGER,
    kafka_offset    BIGINT
);
CREATE TABLE IF NOT EXISTS item_tickers (
    item_id VARCHAR NOT NULL,
    ticker  VARCHAR NOT NULL,              -- canonical symbol: $BARC, BARC.L and "Barclays" are BARC.L
    link    VARCHAR NOT NULL,              -- how it was found: field | cashtag | alias | name
    PRIMARY KEY (item_id, ticker)
);
CREATE TABLE IF NOT EXISTS ticker_sentiment (
    ticker      VARCHAR NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,      -- the as-of time (a point of the cadence grid)
    half_life_s DOUBLE NOT NULL,
    sentiment   DOUBLE NOT NULL,           -- S_k(t), recency-weighted
    n_items     INTEGER NOT NULL,          -- items inside the horizon
    ess         DOUBLE NOT NULL,           -- effective sample size 1 / sum(w^2)
    mean_score  DOUBLE NOT NULL,           -- unweighted mean of the same items
    top_items   STRUCT(item_id VARCHAR, weight DOUBLE)[] NOT NULL,  -- largest weights first
    PRIMARY KEY (ticker, ts, half_life_s)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id              VARCHAR PRIMARY KEY,   -- sha256 of location + raw: replays do not duplicate
    raw             BLOB NOT NULL,         -- the bytes exactly as read
    reason          VARCHAR NOT NULL,
    stage           VARCHAR NOT NULL,      -- parse, score, ...
    source_location VARCHAR NOT NULL,      -- file:line or topic/partition/offset
    kafka_topic     VARCHAR,
    kafka_partition INTEGER,
    kafka_offset    BIGINT,
    seen_at         TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_info (key VARCHAR PRIMARY KEY, value VARCHAR);
"""

TABLES = ("items", "item_tickers", "ticker_sentiment", "dead_letters")


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables if absent, upgrade a file of an older version; safe on every start."""
    con.execute("SET TimeZone = 'UTC'")
    con.execute(DDL)
    _upgrade(con)
    con.execute(
        "INSERT INTO schema_info VALUES ('schema_version', ?) ON CONFLICT DO UPDATE SET value = excluded.value",
        [str(SCHEMA_VERSION)],
    )


def _upgrade(con: duckdb.DuckDBPyConnection) -> None:
    columns = {row[0] for row in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'item_tickers'").fetchall()}
    if "link" not in columns:  # version 1 did not record how a ticker was found
        con.execute("ALTER TABLE item_tickers ADD COLUMN link VARCHAR DEFAULT 'unrecorded'")
