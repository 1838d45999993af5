"""The sink for runners with many workers: Parquet files per table, loaded into DuckDB afterwards.

DuckDB has one writer per file, which a hundred Dataflow workers cannot share. Instead every
worker writes ``OUT/<table>/part-*.parquet`` with the exact columns of the DuckDB table, and one
process loads them idempotently (``DuckDBSink.import_parquet`` / ``tickerpulse backfill
--import-parquet OUT --db FILE``; the SQL is in docs/data-model.md).
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import apache_beam as beam

from connectors.duckdb import arrow_rows
from connectors.records import DeadLetter, Item


def _item_rows(item: Item) -> Iterator[dict]:
    yield arrow_rows.item_row(item, datetime.now(timezone.utc))


def _dead_rows(dead: DeadLetter) -> Iterator[dict]:
    yield arrow_rows.dead_letter_row(dead, datetime.now(timezone.utc))


class WriteParquetTables(beam.PTransform):
    """``{"items": ..., "dead_letters": ..., "points": ...} | WriteParquetTables(out_dir)``; any subset."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self._out_dir = out_dir.rstrip("/")

    def expand(self, inputs: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        tables: dict[str, beam.PCollection] = {}
        if "items" in inputs:
            tables["items"] = inputs["items"] | "Item rows" >> beam.FlatMap(_item_rows)
            tables["item_tickers"] = inputs["items"] | "Ticker rows" >> beam.FlatMap(arrow_rows.ticker_rows)
        if "dead_letters" in inputs:
            tables["dead_letters"] = inputs["dead_letters"] | "Dead letter rows" >> beam.FlatMap(_dead_rows)
        if "points" in inputs:
            tables["ticker_sentiment"] = inputs["points"] | "Sentiment rows" >> beam.Map(arrow_rows.sentiment_row)
        return {
            name: rows | f"Write {name}" >> beam.io.WriteToParquet(
                f"{self._out_dir}/{name}/part", arrow_rows.SCHEMAS[name], file_name_suffix=".parquet")
            for name, rows in tables.items()
        }
