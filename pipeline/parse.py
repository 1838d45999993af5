"""Raw bytes -> a validated Item, or a DeadLetter saying why not (docs/data-model.md).

Pure functions, no Beam: the batch backfill and the streaming job share exactly this rule, so the
same record always gets the same id, event time and text key wherever it is read.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timedelta, timezone

from connectors.records import DeadLetter, Item, RawRecord
from pipeline.tickers import FIELD, MAX_TICKERS, InvalidTicker, normalise_ticker

STAGE = "parse"

# Longer texts are refused rather than truncated: a 1 MB "headline" is a broken producer, and
# the model only reads the first few hundred tokens anyway.
MAX_TEXT_CHARS = 20_000
# A record larger than any valid one (text, fields and tickers at their limits, JSON-escaped) is
# refused before decoding, so no single record can make parsing slow or memory-hungry.
MAX_RECORD_BYTES = 1_000_000
MAX_FIELD_CHARS = 2_048  # id, source, url, author, lang

# Event times outside [EARLIEST, now + FUTURE_TOLERANCE] are absurd (an epoch in seconds read
# as milliseconds lands in 1970; a year 9999 is a typo) and would poison the aggregation.
EARLIEST_TS = datetime(1990, 1, 1, tzinfo=timezone.utc)
FUTURE_TOLERANCE = timedelta(days=1)

DEFAULT_SOURCE = "unknown"
_OPTIONAL_STRINGS = ("url", "author", "lang")

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_DIGITS = re.compile(r"^\s*-?\d+\s*$")


class Invalid(ValueError):
    """A record that breaks the data model; the message becomes the dead letter's reason."""


def normalise_text(text: str) -> str:
    """Lower-case, URLs removed, punctuation and whitespace runs collapsed to one space.

    Syndicated copies of a story differ in tracking links, case and punctuation; this is the
    form under which they count as the same text for novelty.
    """
    text = _URL.sub(" ", text.lower())
    return _NON_WORD.sub(" ", text).strip()


def text_key(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()[:32]


def content_id(obj: dict) -> str:
    """A stable id for a record without one: the hash of its canonical JSON."""
    try:
        canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        raise Invalid("too deeply nested to hash into an id (give the record an id)") from None
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def parse_record(record: RawRecord, now: datetime | None = None) -> Item | DeadLetter:
    """Validate one record; never raises for bad input (bad input is data, not a crash)."""
    if record.refused is not None:
        return dead_letter(record, record.refused, stage="read")
    try:
        return _parse(record, now or datetime.now(timezone.utc))
    except Invalid as exc:
        return dead_letter(record, str(exc))


def _bytes_as_read(record: RawRecord) -> bytes:
    return record.raw if record.as_read is None else record.as_read


def dead_letter(record: RawRecord, reason: str, stage: str = STAGE) -> DeadLetter:
    return DeadLetter(raw=_bytes_as_read(record), reason=reason, stage=stage, location=record.location,
                      kafka_topic=record.kafka_topic, kafka_partition=record.kafka_partition,
                      kafka_offset=record.kafka_offset)


def _parse(record: RawRecord, now: datetime) -> Item:
    if len(record.raw) > MAX_RECORD_BYTES:
        raise Invalid(f"record too large: {len(record.raw):,} bytes > {MAX_RECORD_BYTES:,}")
    try:
        decoded = record.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        try:  # the offset in the bytes the dead letter keeps (a CSV row's line, not its JSON)
            _bytes_as_read(record).decode("utf-8")
        except UnicodeDecodeError as as_read_exc:
            exc = as_read_exc
        raise Invalid(f"not UTF-8: byte {exc.start} is invalid") from None
    try:
        obj = json.loads(decoded)
    except json.JSONDecodeError as exc:
        raise Invalid(f"not JSON: {exc.msg}") from None
    except RecursionError:
        raise Invalid("not JSON: too deeply nested") from None
    except ValueError as exc:  # an integer beyond Python's int-string limit (4,300 digits)
        raise Invalid(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Invalid(f"not a JSON object but {type(obj).__name__}")

    text = obj.get("text")
    if not isinstance(text, str):
        raise Invalid("text missing" if text is None else f"text must be a string, not {type(text).__name__}")
    _require_encodable("text", text)
    if not text.strip():
        raise Invalid("text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise Invalid(f"text too long: {len(text)} characters > {MAX_TEXT_CHARS}")

    item_id = _parse_id(obj)
    source = _optional_string(obj, "source") or DEFAULT_SOURCE
    extras = {name: _optional_string(obj, name) for name in _OPTIONAL_STRINGS}
    tickers = _given_tickers(obj.get("tickers"))
    return Item(
        id=item_id,
        ts=_event_time(obj.get("published_at"), record.kafka_timestamp_ms, now),
        source=source,
        text=text,
        text_key=text_key(text),
        tickers=tickers,
        ticker_links=(FIELD,) * len(tickers),
        kafka_topic=record.kafka_topic,
        kafka_partition=record.kafka_partition,
        kafka_offset=record.kafka_offset,
        **extras,
    )


def _require_encodable(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{name} contains an unpaired surrogate escape") from None


def _parse_id(obj: dict) -> str:
    value = obj.get("id")
    if value is None:
        return content_id(obj)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(f"id must be a string or integer, not {type(value).__name__}")
    value = str(value)
    _require_encodable("id", value)
    if not value.strip():
        raise Invalid("id is empty")
    if len(value) > MAX_FIELD_CHARS:
        raise Invalid(f"id too long: {len(value)} characters > {MAX_FIELD_CHARS}")
    return value


def _optional_string(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string, not {type(value).__name__}")
    _require_encodable(name, value)
    if len(value) > MAX_FIELD_CHARS:
        raise Invalid(f"{name} too long: {len(value)} characters > {MAX_FIELD_CHARS}")
    return value or None


def _given_tickers(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(f"tickers must be a list of strings, not {type(value).__name__}")
    tickers: list[str] = []
    for entry in value:
        if len(tickers) == MAX_TICKERS:  # the rest are dropped (docs/companies.md)
            break
        if not isinstance(entry, str):
            raise Invalid(f"tickers must be a list of strings, found {type(entry).__name__}")
        try:
            ticker = normalise_ticker(entry)
        except InvalidTicker as exc:
            raise Invalid(str(exc)) from None
        if ticker not in tickers:
            tickers.append(ticker)
    return tuple(tickers)


def _event_time(published_at: object, kafka_timestamp_ms: int | None, now: datetime) -> datetime:
    """published_at (ISO-8601 or epoch milliseconds), else the Kafka record timestamp."""
    if published_at is None:
        if kafka_timestamp_ms is None or kafka_timestamp_ms < 0:
            raise Invalid("published_at missing and no Kafka timestamp to fall back on")
        return _check_range(_from_epoch_ms(kafka_timestamp_ms, "Kafka timestamp"), "Kafka timestamp", now)
    if isinstance(published_at, bool):
        raise Invalid("published_at must be ISO-8601 or epoch milliseconds, not a boolean")
    if isinstance(published_at, (int, float)):
        ts = _from_epoch_ms(published_at, "published_at")
    elif isinstance(published_at, str) and _DIGITS.match(published_at):
        ts = _from_epoch_ms(_digits_int(published_at), "published_at")
    elif isinstance(published_at, str):
        ts = _from_iso(published_at)
    else:
        raise Invalid(f"published_at must be ISO-8601 or epoch milliseconds, not {type(published_at).__name__}")
    return _check_range(ts, "published_at", now)


def _digits_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (4,300): far out of range anyway
        raise Invalid(f"published_at out of range: {len(text.strip())} digits (epoch milliseconds)") from None


def _from_epoch_ms(value: int | float, name: str) -> datetime:
    try:
        seconds = value / 1000.0
    except OverflowError:  # an integer too large for a float
        raise Invalid(f"{name} out of range: {value.bit_length()}-bit integer (epoch milliseconds)") from None
    if not math.isfinite(seconds):
        raise Invalid(f"{name} is not a finite number")
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise Invalid(f"{name} out of range: {value!r} (epoch milliseconds)") from None


def _from_iso(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"published_at is not ISO-8601: {text[:64]!r}") from None
    # A time without an offset is taken as UTC: feeds without zones are overwhelmingly UTC.
    try:
        return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    except OverflowError:
        raise Invalid(f"published_at out of range: {text[:64]!r}") from None


def _check_range(ts: datetime, name: str, now: datetime) -> datetime:
    if ts < EARLIEST_TS:
        raise Invalid(f"{name} {ts.isoformat()} is before {EARLIEST_TS.date()} (epoch seconds instead of milliseconds?)")
    if ts > now + FUTURE_TOLERANCE:
        raise Invalid(f"{name} {ts.isoformat()} is in the future")
    return ts
