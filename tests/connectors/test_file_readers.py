"""File readers: every format reaches the parser as JSON bytes located path:line."""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.files.readers import count_records, file_format, read_records
from pipeline.parse import parse_record
from pipeline.records import DeadLetter


def read(path):
    with open(path, "rb") as stream:
        return list(read_records(stream, str(path)))


def test_csv_rows_become_json_with_ticker_lists_and_line_numbers(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text,published_at,tickers\n"
                     b'c1,"Apple, Inc. beats\nacross the board",1714550400000,"AAPL MSFT"\n'
                     b"c2,caf\xe9,1714550400000,\n")
    first, second = read(path)
    assert first.location == f"{path}:2" and second.location == f"{path}:4"
    assert json.loads(first.raw) == {"id": "c1", "text": "Apple, Inc. beats\nacross the board",
                                     "published_at": "1714550400000", "tickers": ["AAPL", "MSFT"]}
    item = parse_record(first)
    assert item.tickers == ("AAPL", "MSFT") and item.ts == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    dead = parse_record(second)
    assert isinstance(dead, DeadLetter) and b"caf\xe9" in dead.raw and "not UTF-8" in dead.reason
    with open(path, "rb") as stream:
        assert count_records(stream, str(path)) == 3  # an estimate: a quoted newline counts


def test_parquet_rows_with_timestamps(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["$NVDA up", None],
                             "published_at": pa.array([datetime(2024, 5, 1, 8, tzinfo=timezone.utc)] * 2, pa.timestamp("ms", tz="UTC"))}), path)
    good, bad = read(path)
    assert good.location == f"{path}:#1"
    assert parse_record(good).ts == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    assert parse_record(bad).reason == "text missing"
    with open(path, "rb") as stream:
        assert count_records(stream, str(path)) == 2


def test_json_array_jsonl_and_broken_array(tmp_path):
    (tmp_path / "a.json").write_text('[{"id": 1, "text": "x"}, {"id": 2, "text": "y"}]')
    assert [r.location for r in read(tmp_path / "a.json")] == [f"{tmp_path}/a.json:#1", f"{tmp_path}/a.json:#2"]
    (tmp_path / "b.json").write_text('{"text": "x"}\n\n{"text": "y"}\n')
    assert [r.location for r in read(tmp_path / "b.json")] == [f"{tmp_path}/b.json:1", f"{tmp_path}/b.json:3"]
    (tmp_path / "c.json").write_text('[{"text": "x"},')
    (broken,) = read(tmp_path / "c.json")
    assert parse_record(broken).reason.startswith("not JSON")


def test_jsonl_keeps_exact_bytes():
    records = list(read_records(io.BytesIO(b'{"text": "a"}\r\n\xff\xfe\n'), "x.jsonl"))
    assert [r.raw for r in records] == [b'{"text": "a"}', b"\xff\xfe"]


def test_unknown_format():
    assert file_format("a.NDJSON") == ".jsonl" and file_format("a.csv.gz") == ".csv"
    with pytest.raises(ValueError, match="unknown input format"):
        file_format("a.txt")
