"""The parser: every bad record becomes a dead letter with its bytes and a reason; never a crash."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.records import DeadLetter, Item, RawRecord
from pipeline.parse import MAX_RECORD_BYTES, MAX_TEXT_CHARS, normalise_text, parse_record, text_key
from pipeline.tickers import MAX_TICKERS

NOW = datetime(2024, 6, 1, tzinfo=timezone.utc)


def parse(obj_or_bytes, **raw_kwargs):
    raw = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return parse_record(RawRecord(raw=raw, location="f.jsonl:7", **raw_kwargs), now=NOW)


def reason_of(result) -> str:
    assert isinstance(result, DeadLetter), result
    assert result.stage == "parse" and result.location == "f.jsonl:7"
    return result.reason


def test_full_record():
    item = parse({"id": "n1", "text": "$AAPL beats", "published_at": "2024-05-01T09:30:00-04:00",
                  "source": "news", "tickers": ["aapl", "$msft", "AAPL"], "url": "http://x", "author": "a", "lang": "en"})
    assert isinstance(item, Item)
    assert item.id == "n1" and item.source == "news" and item.tickers == ("AAPL", "MSFT")
    assert item.ts == datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)
    assert (item.url, item.author, item.lang) == ("http://x", "a", "en")


def test_tickers_beyond_the_cap_are_dropped_after_deduplication():
    record = {"id": "t1", "text": "x", "published_at": 1714550400000}
    assert parse({**record, "tickers": ["AAPL"] * 65 + ["$msft"]}).tickers == ("AAPL", "MSFT")
    many = [f"T{i}" for i in range(70)]
    assert parse({**record, "tickers": many}).tickers == tuple(many[:MAX_TICKERS])


def test_epoch_milliseconds_naive_iso_and_digit_strings():
    assert parse({"text": "x", "published_at": 1714550400000}).ts == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    assert parse({"text": "x", "published_at": "1714550400000"}).ts == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    assert parse({"text": "x", "published_at": "2024-05-01 08:00:00"}).ts == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)


def test_kafka_timestamp_is_the_fallback_event_time():
    item = parse({"text": "x"}, kafka_topic="news", kafka_partition=2, kafka_offset=9, kafka_timestamp_ms=1714550400000)
    assert item.ts == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    assert (item.kafka_topic, item.kafka_partition, item.kafka_offset) == ("news", 2, 9)
    assert "no Kafka timestamp" in reason_of(parse({"text": "x"}))


def test_missing_id_gets_a_stable_content_hash():
    first, again = parse({"text": "x", "published_at": 1714550400000}), parse(b'{"published_at":1714550400000,  "text":"x"}')
    assert first.id == again.id and first.id.startswith("sha256:")
    assert parse({"text": "y", "published_at": 1714550400000}).id != first.id
    assert parse({"id": 42, "text": "x", "published_at": 1714550400000}).id == "42"


def test_bad_records_are_dead_letters_with_reasons():
    cases = {
        b"\xff\xfe{": "not UTF-8",
        b'{"text": broken': "not JSON",
        b"[1, 2]": "not a JSON object",
        b'{"published_at": 1714550400000}': "text missing",
        b'{"text": 5, "published_at": 1714550400000}': "text must be a string",
        b'{"text": "  ", "published_at": 1714550400000}': "text is empty",
        b'{"text": "x", "published_at": 1714550400}': "before 1990",  # epoch seconds
        b'{"text": "x", "published_at": "9999-01-01T00:00:00Z"}': "in the future",
        b'{"text": "x", "published_at": "yesterday"}': "not ISO-8601",
        b'{"text": "x", "published_at": 1e300}': "out of range",
        b'{"text": "x", "published_at": NaN}': "not a finite number",
        b'{"text": "x", "published_at": true}': "boolean",
        b'{"text": "x", "published_at": 1714550400000, "tickers": "AAPL"}': "tickers must be a list",
        b'{"text": "x", "published_at": 1714550400000, "tickers": ["$5bn"]}': "not a ticker",
        b'{"text": "x", "published_at": 1714550400000, "id": [1]}': "id must be",
        b'{"text": "x", "published_at": 1714550400000, "source": 3}': "source must be a string",
        b'{"text": "\\ud800", "published_at": 1714550400000}': "surrogate",
    }
    for raw, expected in cases.items():
        result = parse(raw)
        assert expected in reason_of(result), (raw, result)
        assert result.raw == raw


def test_a_100k_character_text_is_refused():
    result = parse({"text": "a" * 100_000, "published_at": 1714550400000})
    assert f"> {MAX_TEXT_CHARS}" in reason_of(result)


HUGE = b"9" * 5000  # beyond Python's 4,300-digit int-string limit


def test_poison_pills_are_dead_letters_not_crashes():
    """Each of these raised out of parse_record before (ValueError, OverflowError, RecursionError)."""
    ok = b'"text": "x", "published_at": 1714550400000'
    cases = {
        b'{' + ok + b', "n": ' + HUGE + b'}': "not JSON: Exceeds the limit (4300 digits)",
        b'{"id": ' + HUGE + b', ' + ok + b'}': "not JSON: Exceeds the limit (4300 digits)",
        b'{"text": "x", "published_at": "' + HUGE + b'"}': "published_at out of range: 5000 digits",
        b'{"text": "x", "published_at": ' + b"9" * 400 + b'}': "published_at out of range: 1329-bit integer",
        b'{"text": "x", "published_at": -' + b"9" * 400 + b'}': "published_at out of range",
        b'{' + ok + b', "deep": ' + b"[" * 100_000 + b']' * 100_000 + b'}': "not JSON: too deeply nested",
        b'{' + ok + b', "pad": "' + b"a" * (10 * 1024 * 1024) + b'"}': "record too large: 10,485,",
        rb'{"text": "\u0000\u001b[2J", "published_at": 1714550400000, "id": "\udfff"}': "id contains an unpaired surrogate",
    }
    for raw, expected in cases.items():
        result = parse(raw)
        assert expected in reason_of(result), (raw[:80], result.reason)
        assert result.raw == raw


def test_a_deep_record_without_id_is_refused_rather_than_hashed():
    import sys

    depth = sys.getrecursionlimit() - 60  # decodable, but too deep to re-encode for the content hash
    raw = b'{"text": "x", "published_at": 1714550400000, "deep": ' + b"[" * depth + b"]" * depth + b"}"
    result = parse(raw)
    assert isinstance(result, (Item, DeadLetter))
    if isinstance(result, DeadLetter):
        assert result.reason in ("not JSON: too deeply nested",
                                 "too deeply nested to hash into an id (give the record an id)")


def test_a_record_larger_than_the_limit_is_refused_before_decoding():
    assert "record too large" in reason_of(parse(b" " * (MAX_RECORD_BYTES + 1)))
    assert "not JSON" in reason_of(parse(b" " * MAX_RECORD_BYTES))


def test_a_dead_letter_keeps_the_bytes_as_read_of_a_re_encoded_record():
    line = b"c1,caf\xe9,1714550400000\n"
    dead = parse(b'{"id": "c1", "text": "caf\xe9"}', as_read=line)
    assert dead.raw == line and reason_of(dead) == "not UTF-8: byte 6 is invalid"
    dead = parse(b'{"id": "c1"}', as_read=b"c1,,x\n")
    assert dead.raw == b"c1,,x\n" and reason_of(dead) == "text missing"


def test_a_reader_refusal_becomes_a_read_dead_letter():
    result = parse_record(RawRecord(raw=b"a,b\n", location="f.csv:2", refused="not CSV: boom"), now=NOW)
    assert (result.raw, result.reason, result.stage, result.location) == (b"a,b\n", "not CSV: boom", "read", "f.csv:2")


def test_text_key_ignores_case_urls_and_punctuation():
    assert text_key("Apple beats! https://t.co/abc") == text_key("APPLE   beats… www.example.com/x?y=1")
    assert text_key("Apple beats") != text_key("Apple misses")
    assert normalise_text("$AAPL: up 5%!") == "aapl up 5"


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["id", "text", "published_at", "source", "tickers", "url", "author", "lang", "x"]),
                    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                                 lambda inner: st.lists(inner, max_size=3), max_leaves=5)).map(
        lambda d: json.dumps(d).encode("utf-8", "surrogatepass")),
))
def test_fuzz_never_raises_and_keeps_the_bytes(raw):
    result = parse_record(RawRecord(raw=raw, location="fuzz:1"), now=NOW)
    if isinstance(result, DeadLetter):
        assert result.raw == raw and result.reason
    else:
        assert result.text.strip() and result.ts.tzinfo is not None
        result.text.encode("utf-8")  # storable
        assert len(result.text_key) == 32
