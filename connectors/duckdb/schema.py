"""The DuckDB schema: the SQL contract users write queries against (docs/sql.md).

Declared once (``TABLES``): the DDL, the Arrow schemas the sinks write (``connectors.duckdb.
arrow_rows``) and the insert statements (``Table.insert_sql``) are all derived from it, so a
column added here reaches all three. Every table has a natural key so that re-running a
backfill, or replaying a Kafka range after a crash, inserts nothing twice (``INSERT ... ON
CONFLICT DO NOTHING`` / ``DO UPDATE``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import duckdb
import pyarrow as pa

SCHEMA_VERSION = 2  # 2: item_tickers.link

_DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


def not_a_database_file(path: str) -> str | None:
    """Why ``path`` cannot be a TickerPulse database, or None. DuckDB takes ``''`` and
    ``:memory:`` as an in-memory database, and opens an existing CSV, JSON or Parquet file as an
    in-memory database with a view over it: every row written there would be lost."""
    if not path or path.startswith(":memory:"):
        return "name a DuckDB file (an in-memory database keeps nothing)"
    if os.path.isfile(path):
        with open(path, "rb") as stream:
            if stream.read(12)[8:12] != _DUCKDB_MAGIC:
                return "the file exists and is not a DuckDB database"
    return None


@dataclass(frozen=True)
class Type:
    """One column type in both worlds: DuckDB's name for it and the Arrow type the sinks write."""

    sql: str
    arrow: pa.DataType


VARCHAR = Type("VARCHAR", pa.string())
BLOB = Type("BLOB", pa.binary())
INTEGER = Type("INTEGER", pa.int32())
BIGINT = Type("BIGINT", pa.int64())
DOUBLE = Type("DOUBLE", pa.float64())
TIMESTAMPTZ = Type("TIMESTAMPTZ", pa.timestamp("us", tz="UTC"))
TOP_ITEM = pa.struct([("item_id", pa.string()), ("weight", pa.float64())])
TOP_ITEMS = Type("STRUCT(item_id VARCHAR, weight DOUBLE)[]", pa.list_(TOP_ITEM))


@dataclass(frozen=True)
class Column:
    name: str
    type: Type
    not_null: bool = True
    comment: str = ""


def nullable(name: str, type_: Type, comment: str = "") -> Column:
    return Column(name, type_, not_null=False, comment=comment)


@dataclass(frozen=True)
class Table:
    """A table, its natural key, and what a second row with the same key does: nothing (replays
    change nothing) or, with ``upsert``, replace every other column (a point's final value)."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    upsert: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def ddl(self) -> str:
        lines = [f"    {c.name} {c.type.sql}{' NOT NULL' if c.not_null else ''}," + (f"  -- {c.comment}" if c.comment else "")
                 for c in self.columns]
        lines.append(f"    PRIMARY KEY ({', '.join(self.key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + "\n".join(lines) + "\n);"

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type.arrow) for c in self.columns])

    def insert_sql(self, source: str = "incoming") -> str:
        """Insert the rows of ``source`` (a registered Arrow table or a view), by column name.

        DISTINCT ON keeps an arbitrary row per key: the DuckDB writer passes one row per point
        already (the last version); it only matters for Parquet imports, whose points are
        written once each."""
        names = ", ".join(self.column_names)
        sql = (f"INSERT INTO {self.name} ({names}) SELECT DISTINCT ON ({', '.join(self.key)}) {names} "
               f"FROM {source} ON CONFLICT ")
        if not self.upsert:
            return sql + "DO NOTHING"
        return sql + "DO UPDATE SET " + ", ".join(f"{name} = excluded.{name}" for name in self.column_names
                                                  if name not in self.key)


TABLES: dict[str, Table] = {table.name: table for table in (
    Table("items", (
        Column("id", VARCHAR, comment="given id, else sha256 of the content"),
        Column("ts", TIMESTAMPTZ, comment="event time: published_at, else Kafka timestamp"),
        Column("source", VARCHAR, comment="news, comment, ..."),
        Column("text", VARCHAR),
        nullable("url", VARCHAR),
        nullable("author", VARCHAR),
        nullable("lang", VARCHAR),
        Column("text_key", VARCHAR, comment="hash of the normalised text: near-duplicates share it"),
        Column("novelty_n", INTEGER, comment="earlier items with the same text_key inside the horizon"),
        Column("label", VARCHAR, comment="negative | neutral | positive"),
        Column("score", DOUBLE, comment="P(positive) - P(negative), in [-1, 1]"),
        Column("prob_negative", DOUBLE),
        Column("prob_neutral", DOUBLE),
        Column("prob_positive", DOUBLE),
        Column("confidence", DOUBLE, comment="max probability"),
        Column("relevance", DOUBLE, comment="r_i of the aggregation attention (docs/aggregation.md)"),
        Column("model", VARCHAR, comment="model name and version that scored it"),
        Column("ingested_at", TIMESTAMPTZ),
        nullable("kafka_topic", VARCHAR),
        nullable("kafka_partition", INTEGER),
        nullable("kafka_offset", BIGINT),
    ), key=("id",)),
    Table("item_tickers", (
        Column("item_id", VARCHAR),
        Column("ticker", VARCHAR, comment='canonical symbol: $BARC, BARC.L and "Barclays" are BARC.L'),
        Column("link", VARCHAR, comment="how it was found: field | cashtag | alias | name"),
    ), key=("item_id", "ticker")),
    Table("ticker_sentiment", (
        Column("ticker", VARCHAR),
        Column("ts", TIMESTAMPTZ, comment="the as-of time (a point of the cadence grid)"),
        Column("half_life_s", DOUBLE),
        Column("sentiment", DOUBLE, comment="S_k(t), recency-weighted"),
        Column("n_items", INTEGER, comment="items inside the horizon"),
        Column("ess", DOUBLE, comment="effective sample size 1 / sum(w^2)"),
        Column("mean_score", DOUBLE, comment="unweighted mean of the same items"),
        Column("top_items", TOP_ITEMS, comment="largest weights first"),
    ), key=("ticker", "ts", "half_life_s"), upsert=True),
    Table("dead_letters", (
        Column("id", VARCHAR, comment="sha256 of location + raw: replays do not duplicate"),
        Column("raw", BLOB, comment="the bytes exactly as read"),
        Column("reason", VARCHAR),
        Column("stage", VARCHAR, comment="parse, score, ..."),
        Column("source_location", VARCHAR, comment="file:line or topic/partition/offset"),
        nullable("kafka_topic", VARCHAR),
        nullable("kafka_partition", INTEGER),
        nullable("kafka_offset", BIGINT),
        Column("seen_at", TIMESTAMPTZ),
    ), key=("id",)),
)}

DDL = "\n".join(table.ddl() for table in TABLES.values()) + (
    "\nCREATE TABLE IF NOT EXISTS schema_info (key VARCHAR PRIMARY KEY, value VARCHAR);")


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
