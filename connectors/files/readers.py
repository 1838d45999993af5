"""Input files -> RawRecord, one per record, located as ``path:line`` (docs/data-model.md).

JSON Lines and JSON arrays keep their bytes as written; CSV and Parquet rows become JSON objects
so that every record reaches the one parser in the same shape. Readers take an open binary
stream, so the caller chooses the file system (local, GCS, S3 through Beam's FileSystems).
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import BinaryIO

from pipeline.records import RawRecord

FORMATS = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
_TICKER_SEPARATORS = re.compile(r"[\s,;|]+")


def file_format(path: str) -> str:
    lowered = path.lower()
    for suffix in FORMATS:
        if lowered.endswith(suffix) or lowered.endswith(suffix + ".gz"):
            return ".jsonl" if suffix == ".ndjson" else suffix
    raise ValueError(f"{path}: unknown input format (use one of {', '.join(FORMATS)})")


def read_records(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    reader = {".jsonl": read_json_lines, ".json": read_json, ".csv": read_csv, ".parquet": read_parquet}
    return reader[file_format(path)](stream, path)


def read_json_lines(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    """One record per non-blank line; the bytes are kept exactly (a dead letter shows them)."""
    for line_no, line in enumerate(iter(stream.readline, b""), 1):  # Beam's CompressedFile is not iterable
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield RawRecord(raw=line, location=f"{path}:{line_no}")


def read_json(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    """A JSON array of records (``path:#i``), or JSON Lines saved with a .json name."""
    data = stream.read()
    if not data.lstrip().startswith(b"["):
        yield from read_json_lines(io.BytesIO(data), path)
        return
    try:
        records = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # The whole file is one broken record: the parser re-reads it and names the error.
        yield RawRecord(raw=data, location=f"{path}:1")
        return
    for index, record in enumerate(records, 1):
        yield RawRecord(raw=_to_json_bytes(record), location=f"{path}:#{index}")


def read_csv(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    """A header row names the fields; a ``tickers`` cell may hold ``AAPL,MSFT`` or ``AAPL MSFT``.

    Bytes that are not UTF-8 survive as surrogate escapes and are written back unchanged, so the
    parser refuses the row as non-UTF-8 and the dead letter holds the original bytes.
    """
    text = codecs.getreader("utf-8-sig")(stream, errors="surrogateescape")
    reader = csv.DictReader(text)
    row_start = 2
    for row in reader:
        record = {key: value for key, value in row.items() if key is not None and value not in (None, "")}
        if None in row:  # more cells than header fields: keep them so the raw record is complete
            record["_extra_cells"] = row[None]
        if "tickers" in record:
            record["tickers"] = [t for t in _TICKER_SEPARATORS.split(record["tickers"]) if t]
        if record:
            yield RawRecord(raw=_to_json_bytes(record), location=f"{path}:{row_start}")
        row_start = reader.line_num + 1


def read_parquet(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    source = pq.ParquetFile(stream)
    row = 0
    for batch in source.iter_batches(batch_size=8192):
        for record in batch.to_pylist():
            row += 1
            present = {key: value for key, value in record.items() if value is not None}
            yield RawRecord(raw=_to_json_bytes(present), location=f"{path}:#{row}")


def count_records(stream: BinaryIO, path: str) -> int:
    """A fast estimate of the number of records (for the progress ETA), without parsing."""
    fmt = file_format(path)
    if fmt == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(stream).metadata.num_rows
    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
    return max(lines - 1, 0) if fmt == ".csv" else lines


def _to_json_bytes(record: object) -> bytes:
    text = json.dumps(record, ensure_ascii=False, default=_json_default)
    return text.encode("utf-8", "surrogateescape")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)
