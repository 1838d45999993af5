"""File readers: every format reaches the parser as JSON bytes located path:line."""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.files.readers import count_records, file_format, read_records
from connectors.records import DeadLetter, Item
from pipeline.parse import parse_record


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
    assert isinstance(dead, DeadLetter) and dead.raw == b"c2,caf\xe9,1714550400000,\n"  # the line as read
    assert dead.reason == "not UTF-8: byte 6 is invalid"  # an offset into that line
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
    good, broken = read(tmp_path / "c.json")
    assert good.raw == b'{"text": "x"}'
    assert parse_record(broken).reason == "not JSON: the array is not closed"


def test_json_with_a_bom_and_a_lone_pretty_printed_object(tmp_path):
    (tmp_path / "a.json").write_bytes(b'\xef\xbb\xbf[\n {"id": "b1", "text": "x"},\n {"id": "b2", "text": "y"}\n]\n')
    assert [(r.raw, r.location) for r in read(tmp_path / "a.json")] == [
        (b'{"id": "b1", "text": "x"}', f"{tmp_path}/a.json:#1"), (b'{"id": "b2", "text": "y"}', f"{tmp_path}/a.json:#2")]
    pretty = b'{\n  "id": "p1",\n  "text": "$AAPL up",\n  "published_at": 1714550400000\n}'
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf\n" + pretty + b"\n")
    (record,) = read(tmp_path / "b.json")
    assert record.raw == pretty and record.location == f"{tmp_path}/b.json:2"
    assert parse_record(record).id == "p1"


def test_jsonl_skips_only_lines_of_json_whitespace():
    records = list(read_records(io.BytesIO(b' \t\r\n\x0b\x0c\n{"text": "a"}\n'), "x.jsonl"))
    assert [(r.raw, r.location) for r in records] == [(b"\x0b\x0c", "x.jsonl:2"), (b'{"text": "a"}', "x.jsonl:3")]
    assert parse_record(records[0]).reason.startswith("not JSON")


def test_jsonl_drops_a_bom_at_the_start_only():
    records = list(read_records(io.BytesIO(b'\xef\xbb\xbf{"text": "a"}\n\xef\xbb\xbf{"text": "b"}\n'), "x.jsonl"))
    assert [r.raw for r in records] == [b'{"text": "a"}', b'\xef\xbb\xbf{"text": "b"}']


def test_jsonl_keeps_exact_bytes():
    records = list(read_records(io.BytesIO(b'{"text": "a"}\r\n\xff\xfe\n'), "x.jsonl"))
    assert [r.raw for r in records] == [b'{"text": "a"}', b"\xff\xfe"]


def test_unknown_format():
    assert file_format("a.NDJSON") == ".jsonl" and file_format("a.csv.gz") == ".csv"
    with pytest.raises(ValueError, match="unknown input format"):
        file_format("a.txt")


HUGE = "9" * 5000  # beyond Python's 4,300-digit int-string limit


def test_json_array_keeps_element_bytes_and_refuses_from_a_poison_element(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[ {"id": 1,  "text": "caf\xc3\xa9", "published_at": 1714550400000},\n {"id": 2, "text": "y", "n": ' + HUGE.encode()
                     + b'}, {"id": 3, "text": "z"}]')
    first, rest = read(path)
    assert first.raw == b'{"id": 1,  "text": "caf\xc3\xa9", "published_at": 1714550400000}' and isinstance(parse_record(first), Item)
    dead = parse_record(rest)
    assert rest.location == f"{path}:#2" and dead.stage == "read"
    assert dead.reason.startswith("not JSON: Exceeds the limit") and dead.raw.startswith(b'{"id": 2')


@pytest.mark.parametrize("body, reason", [
    (b"[" * 100_000, "not JSON: too deeply nested"),
    (b'[{"text": "x"}] junk', "not JSON: extra data after the array (character 16)"),
    (b'[{"text": "x"} {"text": "y"}]', "not JSON: expected ',' or ']' (character 15)"),
    (b'[\xff]', "not UTF-8: byte 1 is invalid"),
])
def test_json_array_breakage_is_one_refused_record(tmp_path, body, reason):
    path = tmp_path / "a.json"
    path.write_bytes(body)
    records = read(path)
    assert parse_record(records[-1]).reason == reason
    assert all(isinstance(parse_record(r), (Item, DeadLetter)) for r in records)


def test_a_refused_csv_row_keeps_its_lines_as_read(tmp_path):
    path = tmp_path / "in.csv"
    row = b'm6,tick,2024-05-06T10:00:00Z,"$aapl, msft;\nbrk.b|5bn"\r\n'
    path.write_bytes(b"id,text,published_at,tickers\r\n" + row)
    (record,) = read(path)
    dead = parse_record(record)
    assert dead.reason == "not a ticker symbol: '5bn'" and dead.raw == row and dead.location == f"{path}:2"


def test_csv_under_a_header_naming_a_column_twice_every_row_is_refused(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,text,published_at,text,,\nd1,$AAPL real headline,2024-05-06T10:00:00Z,,,\n")
    (record,) = read(path)
    dead = parse_record(record)
    assert dead.reason == "not CSV: the header names 'text' more than once" and dead.stage == "read"
    assert dead.raw == b"d1,$AAPL real headline,2024-05-06T10:00:00Z,,,\n" and record.location == f"{path}:2"


def test_csv_cell_over_the_csv_limit_is_refused_and_the_next_row_read(tmp_path):
    path = tmp_path / "in.csv"
    big = b"x" * (10 * 1024 * 1024)
    path.write_bytes(b"id,text,published_at\n"
                     b"a," + big + b",1714550400000\n"
                     b"b,ok\x00nul,1714550400000\n"
                     b"c,huge," + HUGE.encode() + b"\n")
    big_row, nul_row, huge_row = read(path)
    dead = parse_record(big_row)
    assert dead.reason.startswith("not CSV: field larger than field limit") and big_row.location == f"{path}:2"
    assert dead.raw == b"a," + big + b",1714550400000\n"
    assert isinstance(parse_record(nul_row), Item) and nul_row.location == f"{path}:3"
    assert parse_record(huge_row).reason == "published_at out of range: 5000 digits (epoch milliseconds)"


def test_csv_quote_never_closed_is_refused_with_the_rest_of_the_file(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,text,published_at\n"
                     b"c0,$MSFT before,2024-05-06T09:59:00Z\n"
                     b'c1,"$AAPL starts a quote,2024-05-06T10:00:00Z\n'
                     b"c2,$MSFT second row,2024-05-06T10:01:00Z\n")
    before, unclosed = read(path)
    assert isinstance(parse_record(before), Item)
    dead = parse_record(unclosed)
    assert dead.reason == "not CSV: a quoted cell is still open at the end of the file"
    assert unclosed.location == f"{path}:3" and dead.raw.startswith(b'c1,"$AAPL') and dead.raw.endswith(b"second row,2024-05-06T10:01:00Z\n")


def test_csv_text_after_a_closing_quote_is_refused_not_merged(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b'id,text,published_at\nm5,"x"y,1714550400000\nm6,ok,1714550400000\n')
    refused, good = read(path)
    assert parse_record(refused).reason == "not CSV: ',' expected after '\"'" and refused.raw == b'm5,"x"y,1714550400000\n'
    assert isinstance(parse_record(good), Item) and good.location == f"{path}:3"


def test_a_file_that_is_not_parquet_is_one_refused_record(tmp_path):
    path = tmp_path / "in.parquet"
    path.write_bytes(b"PAR1 not really")
    (record,) = read(path)
    dead = parse_record(record)
    assert dead.reason.startswith("not Parquet") and dead.raw == b"PAR1 not really"


def test_parquet_values_python_cannot_hold_refuse_their_rows(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["n1", "n2", "f1"], "text": ["$AAPL up"] * 3,
                             "published_at": pa.array([1714989600123456789, 1714989600000000000, None], pa.timestamp("ns")),
                             "us": pa.array([None, None, 2**62], pa.timestamp("us"))}), path)
    sub_us, whole_us, far = [parse_record(r) for r in read(path)]
    assert sub_us.stage == "read" and sub_us.reason.startswith("not convertible: published_at: Nanosecond resolution")
    assert json.loads(sub_us.raw)["published_at"] == "2024-05-06 10:00:00.123456789" and sub_us.location == f"{path}:#1"
    assert isinstance(whole_us, Item)
    assert far.reason == "not convertible: us: date value out of range" and far.location == f"{path}:#3"


@pytest.mark.parametrize("data", [b"PAR1 not really", b""])
def test_a_parquet_file_pyarrow_cannot_open_has_no_count(data):
    assert count_records(io.BytesIO(data), "in.parquet") is None


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text()
    | st.sampled_from([HUGE, "\ud800", "\x00", "\x1b[2J", "1e999", "2024-05-01T08:00:00Z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "text", "published_at", "tickers", "source", "url", "x"]), inner, max_size=5),
    max_leaves=12)


def _json_bytes(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).replace('"' + HUGE + '"', HUGE).encode("utf-8", "surrogatepass")


@_FUZZ
@given(data=st.binary(max_size=300) | st.lists(_JSONISH, max_size=4).map(_json_bytes),
       fmt=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_any_bytes_in_any_reader_become_items_or_dead_letters(data, fmt):
    """No reader raises on content, and every record it yields parses to an Item or a DeadLetter."""
    for record in read_records(io.BytesIO(data), "fuzz" + fmt):
        assert isinstance(parse_record(record), (Item, DeadLetter))


def test_a_damaged_gzip_keeps_the_records_before_the_damage_and_refuses_the_rest(tmp_path):
    import gzip

    from pipeline.transforms import _read_file

    good = b"".join(b'{"id": "%d", "text": "x", "published_at": 1714550400000}\n' % i for i in range(2000))
    compressed = bytearray(gzip.compress(good + b"y" * 200_000))
    compressed[len(compressed) // 2:len(compressed) // 2 + 64] = b"\x00" * 64  # damage in the middle
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(bytes(compressed))
    records = list(_read_file(str(path)))
    refused = [r for r in records if r.refused]
    assert len(refused) == 1 and refused[0] is records[-1]
    assert refused[0].refused.startswith("cannot decompress") and refused[0].raw == bytes(compressed)
    assert parse_record(refused[0]).stage == "read"
    (tmp_path / "not.jsonl.gz").write_bytes(b"plain text, not gzip")
    (only,) = _read_file(str(tmp_path / "not.jsonl.gz"))
    assert only.refused.startswith("cannot decompress")


def test_a_truncated_gzip_keeps_the_records_read_and_says_it_is_truncated(tmp_path):
    import zlib

    from pipeline.transforms import _read_file

    line = b'{"id": "%d", "text": "x", "published_at": 1714550400000}\n'
    compressor = zlib.compressobj(wbits=31)  # gzip framing
    head = compressor.compress(b"".join(line % i for i in range(100))) + compressor.flush(zlib.Z_FULL_FLUSH)
    compressor.compress(b"".join(line % i for i in range(100, 200)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(head)  # cut at a line boundary, before the end-of-stream marker
    records = list(_read_file(str(path)))
    assert len(records) == 101 and not any(r.refused for r in records[:100])
    assert records[-1].refused.startswith("cannot decompress: the file is truncated") and records[-1].raw == head
