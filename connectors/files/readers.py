"""Input files -> RawRecord, one per record, located as ``path:line`` (docs/data-model.md).

JSON Lines and JSON array elements keep their bytes as written; CSV and Parquet rows become JSON
objects so that every record reaches the one parser in the same shape (a CSV row keeps its
original lines too, ``as_read``, for its dead letter). Readers take an open
binary stream, so the caller chooses the file system (local, GCS, S3 through Beam's FileSystems).
Readers never raise on content: bytes they cannot split into records become one record marked
``refused`` with the reason, which the parser turns into a dead letter.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import TYPE_CHECKING, BinaryIO

from connectors.records import RawRecord

if TYPE_CHECKING:  # pyarrow is imported only when a Parquet file is read
    import pyarrow as pa

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


_JSON_WHITESPACE = " \t\r\n"  # what JSON allows between tokens; a line of other bytes is a record


def read_json_lines(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    """One record per non-blank line (blank: JSON whitespace only); the bytes are kept exactly (a dead letter shows them), less
    a UTF-8 byte order mark at the start of the file."""
    for line_no, line in enumerate(iter(stream.readline, b""), 1):  # Beam's CompressedFile is not iterable
        line = line.rstrip(b"\r\n")
        if line_no == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        if line.strip(_JSON_WHITESPACE.encode()):
            yield RawRecord(raw=line, location=f"{path}:{line_no}")


_JSON_SPACE = re.compile(f"[{_JSON_WHITESPACE}]*")
_JSON_DECODER = json.JSONDecoder()


def read_json(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    """A JSON array of records (``path:#i``, each element's bytes as written), one JSON object
    (pretty-printed or not; ``path:line`` of its start), or JSON Lines saved with a .json name.
    A UTF-8 byte order mark at the start is dropped.

    Elements are split off one at a time: from the first element that is not valid JSON (or a
    missing comma), the rest of the file is one record, refused with the decoder's reason.
    """
    data = stream.read().removeprefix(codecs.BOM_UTF8)
    if not data.lstrip().startswith(b"["):
        lone = _lone_value(data)
        if lone is not None:
            yield RawRecord(raw=lone[1], location=f"{path}:{lone[0]}")
        else:
            yield from read_json_lines(io.BytesIO(data), path)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield RawRecord(raw=data, location=f"{path}:1", refused=f"not UTF-8: byte {exc.start} is invalid")
        return
    pos = _JSON_SPACE.match(text, text.index("[") + 1).end()
    index = 0
    closed = text.startswith("]", pos)
    if closed:
        pos = _JSON_SPACE.match(text, pos + 1).end()
    while not closed and pos < len(text):
        index += 1
        start = pos
        try:
            _, end = _JSON_DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            yield _refused_rest(text, start, path, index, f"not JSON: {exc.msg} (character {exc.pos})")
            return
        except RecursionError:
            yield _refused_rest(text, start, path, index, "not JSON: too deeply nested")
            return
        except ValueError as exc:  # an integer beyond Python's int-string limit
            yield _refused_rest(text, start, path, index, f"not JSON: {exc}")
            return
        yield RawRecord(raw=text[start:end].encode("utf-8"), location=f"{path}:#{index}")
        pos = _JSON_SPACE.match(text, end).end()
        closed = text.startswith("]", pos)
        if not closed and not text.startswith(",", pos):
            yield _refused_rest(text, pos, path, index + 1, f"not JSON: expected ',' or ']' (character {pos})")
            return
        pos = _JSON_SPACE.match(text, pos + 1).end()
    if not closed:
        yield _refused_rest(text, pos, path, index + 1, "not JSON: the array is not closed")
    elif pos < len(text):
        yield _refused_rest(text, pos, path, index + 1, f"not JSON: extra data after the array (character {pos})")


def _lone_value(data: bytes) -> tuple[int, bytes] | None:
    """(line it starts on, bytes as written) when the whole file is one JSON value, else None."""
    try:
        text = data.decode("utf-8")
        start = _JSON_SPACE.match(text).end()
        _, end = _JSON_DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep, an int too long: not one value
        return None
    if _JSON_SPACE.match(text, end).end() < len(text):
        return None
    return text.count("\n", 0, start) + 1, text[start:end].encode("utf-8")


def _refused_rest(text: str, start: int, path: str, index: int, reason: str) -> RawRecord:
    return RawRecord(raw=text[start:].encode("utf-8"), location=f"{path}:#{index}", refused=reason)


def read_csv(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    """A header row names the fields; a ``tickers`` cell may hold ``AAPL,MSFT`` or ``AAPL MSFT``.

    Bytes that are not UTF-8 survive as surrogate escapes and are written back unchanged, so the
    parser refuses the row as non-UTF-8 and the dead letter holds the original bytes. A row the
    csv module cannot split (a cell over its 128 KiB limit, text after a closing quote, a quote
    never closed) is refused with its original lines; after an unclosed quote that is the rest
    of the file. Under a header that names a column twice, every row is refused.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
    # Line by line: codecs' StreamReader takes quadratic time on one long line.
    lines = _KeptLines(decoder.decode(line) for line in iter(stream.readline, b""))
    # Strict: a quote left open would otherwise swallow every later row into one cell, silently.
    reader = csv.DictReader(lines, strict=True)
    try:
        reader.fieldnames
    except csv.Error as exc:
        yield RawRecord(raw=lines.take(), location=f"{path}:1", refused=f"not CSV: {exc}")
        return
    lines.take()
    names = [name for name in reader.fieldnames or () if name]
    repeated = sorted({name for name in names if names.count(name) > 1})
    # A repeated name keeps only its last cell: a row's text could be replaced by another column.
    ambiguous = f"not CSV: the header names {', '.join(map(repr, repeated))} more than once" if repeated else None
    row_start = 2
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            reason = _UNCLOSED_QUOTE if str(exc) == "unexpected end of data" else f"not CSV: {exc}"
            yield RawRecord(raw=lines.take(), location=f"{path}:{row_start}", refused=reason)
            row_start = lines.consumed + 1
            continue
        as_read = lines.take()
        record = {key: value for key, value in row.items() if key is not None and value not in (None, "")}
        if None in row:  # more cells than header fields: keep them so the raw record is complete
            record["_extra_cells"] = row[None]
        if "tickers" in record:
            record["tickers"] = [t for t in _TICKER_SEPARATORS.split(record["tickers"]) if t]
        if ambiguous:
            yield RawRecord(raw=as_read, location=f"{path}:{row_start}", refused=ambiguous)
        elif record:
            yield RawRecord(raw=_to_json_bytes(record), location=f"{path}:{row_start}", as_read=as_read)
        row_start = lines.consumed + 1


_UNCLOSED_QUOTE = "not CSV: a quoted cell is still open at the end of the file"


class _KeptLines:
    """The text lines the csv module reads, kept until taken: a refused row's original bytes."""

    def __init__(self, text: Iterator[str]) -> None:
        self._text = text
        self._kept: list[str] = []
        self.consumed = 0  # lines read so far

    def __iter__(self) -> "_KeptLines":
        return self

    def __next__(self) -> str:
        line = next(self._text)
        self.consumed += 1
        self._kept.append(line)
        return line

    def take(self) -> bytes:
        raw = "".join(self._kept).encode("utf-8", "surrogateescape")
        self._kept.clear()
        return raw


def read_parquet(stream: BinaryIO, path: str) -> Iterator[RawRecord]:
    """Rows as JSON objects (``path:#n``); a file pyarrow cannot read is refused whole, as its bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        source = pq.ParquetFile(stream)
        for batch in source.iter_batches(batch_size=8192):
            for record, unconvertible in _batch_rows(batch):
                row += 1
                present = {key: value for key, value in record.items() if value is not None}
                yield RawRecord(raw=_to_json_bytes(present), location=f"{path}:#{row}", refused=unconvertible)
    except (pa.ArrowException, OSError) as exc:
        stream.seek(0)
        after = f" after row {row}" if row else ""
        yield RawRecord(raw=stream.read(), location=f"{path}:#{row + 1}",
                        refused=f"not Parquet{after}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def _batch_rows(batch: pa.RecordBatch) -> Iterator[tuple[dict[str, object], str | None]]:
    """The batch's rows as dicts. A row holding a value Python cannot represent (a timestamp with
    a sub-microsecond part, a date past year 9999) comes with the reason to refuse it, and such a
    cell holds the value as Arrow prints it."""
    import pyarrow as pa

    try:
        records = batch.to_pylist()
    except (ValueError, OverflowError):  # pyarrow raises these, not ArrowException
        records = None
    if records is not None:
        yield from ((record, None) for record in records)
        return
    for i in range(batch.num_rows):
        record: dict[str, object] = {}
        problems = []
        for name, column in zip(batch.schema.names, batch.columns):
            cell = column.slice(i, 1)
            try:
                record[name] = cell.to_pylist()[0]
            except (ValueError, OverflowError) as exc:
                try:
                    record[name] = cell.cast(pa.string()).to_pylist()[0]
                except pa.ArrowException:
                    record[name] = f"<{cell.type}>"
                problems.append(f"{name}: {str(exc).split('. ')[0]}")
        yield record, (f"not convertible: {'; '.join(problems)}" if problems else None)


def count_records(stream: BinaryIO, path: str) -> int | None:
    """A fast estimate of the number of records (for the progress ETA), without parsing; None for
    a Parquet file pyarrow cannot open (reading it gives the dead letter)."""
    fmt = file_format(path)
    if fmt == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(stream).metadata.num_rows
        except (pa.ArrowException, OSError):
            return None
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
