"""The messages of the scale-out topics (docs/architecture.md, "Scale-out"): JSON, one per record.

``scored`` (scoring workers -> store), keyed by item id (a dead letter: by its source location):

    {"kind": "item", "id", "ts" (ISO-8601 UTC), "source", "text", "text_key", "tickers": [..],
     "ticker_links": [..], "url", "author", "lang", "label", "score", "probs": [neg, neu, pos],
     "confidence", "model", "kafka_topic", "kafka_partition", "kafka_offset"}
    {"kind": "dead_letter", "raw_b64", "reason", "stage", "location",
     "kafka_topic", "kafka_partition", "kafka_offset"}

``kafka_*`` is the record's origin in the input topics; the store acknowledges the scored record
by it (connectors.kafka.relay). Novelty and relevance are not in it: the store computes them.

``points`` (store -> downstream), keyed by ticker, the last message per (ticker, ts, half_life_s)
being the current value:

    {"kind": "point", "ticker", "ts" (ISO-8601 UTC), "half_life_s", "sentiment", "n_items", "ess",
     "mean_score", "top_items": [{"item_id", "weight"}, ..]}

Floats are written with Python's shortest round-trip repr, so decoding gives the same numbers.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import datetime, timezone

from connectors.records import DeadLetter, Item, RawRecord
from models.aggregation_config import SentimentPoint

ITEM, DEAD_LETTER, POINT = "item", "dead_letter", "point"


def _dumps(message: dict) -> bytes:
    return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def encode_item(item: Item) -> tuple[bytes, bytes]:
    """(key, value) of a scored item."""
    return item.id.encode("utf-8", "surrogatepass"), _dumps({
        "kind": ITEM, "id": item.id, "ts": item.ts.isoformat(), "source": item.source, "text": item.text,
        "text_key": item.text_key, "tickers": list(item.tickers), "ticker_links": list(item.ticker_links),
        "url": item.url, "author": item.author, "lang": item.lang, "label": item.label, "score": item.score,
        "probs": list(item.probs) if item.probs is not None else None, "confidence": item.confidence,
        "model": item.model, "kafka_topic": item.kafka_topic, "kafka_partition": item.kafka_partition,
        "kafka_offset": item.kafka_offset})


def encode_dead_letter(dead: DeadLetter) -> tuple[bytes, bytes]:
    """(key, value) of a dead letter: the raw bytes travel base64-encoded."""
    return dead.location.encode("utf-8", "surrogatepass"), _dumps({
        "kind": DEAD_LETTER, "raw_b64": base64.b64encode(dead.raw).decode("ascii"), "reason": dead.reason,
        "stage": dead.stage, "location": dead.location, "kafka_topic": dead.kafka_topic,
        "kafka_partition": dead.kafka_partition, "kafka_offset": dead.kafka_offset})


def decode_scored(record: RawRecord) -> Item | DeadLetter:
    """A ``scored`` message -> the Item or DeadLetter it carries; a message that is not one
    (or names no origin offset) -> a DeadLetter of stage ``store`` at the message's own location."""
    try:
        message = json.loads(record.raw)
        kind = message["kind"]
        if kind == ITEM:
            result: Item | DeadLetter = _item(message)
        elif kind == DEAD_LETTER:
            result = DeadLetter(raw=base64.b64decode(message["raw_b64"], validate=True), reason=str(message["reason"]),
                                stage=str(message["stage"]), location=str(message["location"]),
                                kafka_topic=_text(message["kafka_topic"]),
                                kafka_partition=_int(message["kafka_partition"]),
                                kafka_offset=_int(message["kafka_offset"]))
        else:
            raise ValueError(f"unknown kind {kind!r}")
        if result.kafka_topic is None or result.kafka_partition is None or result.kafka_offset is None:
            raise ValueError("no origin (kafka_topic, kafka_partition, kafka_offset)")
        return result
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        return DeadLetter(raw=record.raw, reason=f"not a scored message: {type(exc).__name__}: {exc}"[:1000],
                          stage="store", location=record.location, kafka_topic=record.kafka_topic,
                          kafka_partition=record.kafka_partition, kafka_offset=record.kafka_offset)


def _item(m: dict) -> Item:
    ts = datetime.fromisoformat(m["ts"])
    if ts.tzinfo is None:
        raise ValueError(f"ts without a time zone: {m['ts']!r}")
    probs = tuple(float(p) for p in m["probs"])
    if len(probs) != 3:
        raise ValueError(f"probs must have 3 values, not {len(probs)}")
    tickers, links = tuple(map(str, m["tickers"])), tuple(map(str, m["ticker_links"]))
    if len(tickers) != len(links):
        raise ValueError("tickers and ticker_links differ in length")
    return Item(id=str(m["id"]), ts=ts.astimezone(timezone.utc), source=str(m["source"]), text=str(m["text"]),
                text_key=str(m["text_key"]), tickers=tickers, ticker_links=links, url=_text(m["url"]),
                author=_text(m["author"]), lang=_text(m["lang"]), label=str(m["label"]), score=float(m["score"]),
                probs=probs, confidence=float(m["confidence"]), model=_text(m["model"]),
                kafka_topic=_text(m["kafka_topic"]), kafka_partition=_int(m["kafka_partition"]),
                kafka_offset=_int(m["kafka_offset"]))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value


def encode_points(points: Iterable[SentimentPoint]) -> list[tuple[bytes, bytes]]:
    """(key, value) per point, the last version of each (ticker, ts, half_life_s) only, in the
    order of those last versions (a write may hold a provisional and the final version)."""
    last: dict[tuple[str, float, float], SentimentPoint] = {}
    for point in points:
        key = (point.ticker, point.ts_s, point.half_life_s)
        last.pop(key, None)
        last[key] = point
    return [(p.ticker.encode("utf-8"), _dumps({
        "kind": POINT, "ticker": p.ticker, "ts": datetime.fromtimestamp(p.ts_s, timezone.utc).isoformat(),
        "half_life_s": p.half_life_s, "sentiment": p.sentiment, "n_items": p.n_items, "ess": p.ess,
        "mean_score": p.mean_score, "top_items": [{"item_id": i, "weight": w} for i, w in p.top_items]}))
        for p in last.values()]
