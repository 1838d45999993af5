"""Records -> Arrow tables whose columns are exactly the DuckDB tables (``connectors.duckdb.schema.TABLES``).

One conversion for both sinks: the DuckDB writer inserts these tables, the Parquet sink writes
them as files that DuckDB later reads with ``read_parquet``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone

import pyarrow as pa

from connectors.duckdb.schema import TABLES
from connectors.records import DeadLetter, Item

# The Arrow schemas of the tables, derived from their one declaration.
SCHEMAS: dict[str, pa.Schema] = {name: table.arrow_schema() for name, table in TABLES.items()}
ITEMS = SCHEMAS["items"]
ITEM_TICKERS = SCHEMAS["item_tickers"]
TICKER_SENTIMENT = SCHEMAS["ticker_sentiment"]
DEAD_LETTERS = SCHEMAS["dead_letters"]


def item_row(item: Item, ingested_at: datetime) -> dict:
    """One ``items`` row; only scored items (label, score, probs, relevance set) are stored."""
    if item.label is None or item.score is None or item.probs is None or item.relevance is None:
        raise ValueError(f"item {item.id!r} is not scored; score it before writing")
    negative, neutral, positive = item.probs
    return {
        "id": item.id, "ts": item.ts, "source": item.source, "text": item.text, "url": item.url,
        "author": item.author, "lang": item.lang, "text_key": item.text_key, "novelty_n": item.novelty_n,
        "label": item.label, "score": item.score, "prob_negative": negative, "prob_neutral": neutral,
        "prob_positive": positive, "confidence": item.confidence, "relevance": item.relevance,
        "model": item.model, "ingested_at": ingested_at, "kafka_topic": item.kafka_topic,
        "kafka_partition": item.kafka_partition, "kafka_offset": item.kafka_offset,
    }


def dead_letter_id(dead: DeadLetter) -> str:
    """The same bad record read from the same place twice is one dead letter, not two."""
    digest = hashlib.sha256(dead.location.encode("utf-8", "surrogatepass") + b"\0" + dead.raw)
    return digest.hexdigest()[:32]


def dead_letter_row(dead: DeadLetter, seen_at: datetime) -> dict:
    return {
        "id": dead_letter_id(dead), "raw": dead.raw, "reason": dead.reason, "stage": dead.stage,
        "source_location": dead.location, "kafka_topic": dead.kafka_topic,
        "kafka_partition": dead.kafka_partition, "kafka_offset": dead.kafka_offset, "seen_at": seen_at,
    }


def sentiment_row(point: object) -> dict:
    """A ``models.aggregation.SentimentPoint`` as a row; top_items are (item_id, weight) pairs."""
    return {
        "ticker": point.ticker,
        "ts": datetime.fromtimestamp(point.ts_s, tz=timezone.utc),
        "half_life_s": float(point.half_life_s),
        "sentiment": float(point.sentiment),
        "n_items": int(point.n_items),
        "ess": float(point.ess),
        "mean_score": float(point.mean_score),
        "top_items": [{"item_id": item_id, "weight": float(weight)} for item_id, weight in point.top_items],
    }


def items_table(items: Sequence[Item], ingested_at: datetime | None = None) -> pa.Table:
    now = ingested_at or datetime.now(timezone.utc)
    return pa.Table.from_pylist([item_row(item, now) for item in items], schema=ITEMS)


def ticker_rows(item: Item) -> Iterator[dict]:
    """One ``item_tickers`` row per ticker, with how it was linked."""
    for ticker, link in zip(item.tickers, item.ticker_links, strict=True):
        yield {"item_id": item.id, "ticker": ticker, "link": link}


def item_tickers_table(items: Iterable[Item]) -> pa.Table:
    return pa.Table.from_pylist([row for item in items for row in ticker_rows(item)], schema=ITEM_TICKERS)


def dead_letters_table(dead: Sequence[DeadLetter], seen_at: datetime | None = None) -> pa.Table:
    now = seen_at or datetime.now(timezone.utc)
    return pa.Table.from_pylist([dead_letter_row(d, now) for d in dead], schema=DEAD_LETTERS)


def sentiment_table(points: Sequence[object]) -> pa.Table:
    return pa.Table.from_pylist([sentiment_row(p) for p in points], schema=TICKER_SENTIMENT)
