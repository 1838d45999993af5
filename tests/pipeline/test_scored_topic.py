"""The scale-out topics' messages: what a worker publishes is what the store reads back."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.records import DeadLetter, Item, RawRecord
from models.aggregation_config import SentimentPoint
from pipeline.scored_topic import decode_scored, encode_dead_letter, encode_item, encode_points

_text = st.text(max_size=40)
_unit = st.floats(0, 1, allow_nan=False)
_items = st.builds(
    Item, id=st.text(min_size=1, max_size=20), source=st.sampled_from(["news", "comment"]), text=_text,
    ts=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1),
                    timezones=st.just(timezone.utc)),
    text_key=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    tickers=st.lists(st.from_regex(r"[A-Z]{1,5}", fullmatch=True), max_size=3).map(tuple),
    url=st.none() | _text, author=st.none() | _text, lang=st.none() | st.just("en"),
    kafka_topic=st.just("news"), kafka_partition=st.integers(0, 63), kafka_offset=st.integers(0, 2**62),
    label=st.sampled_from(["negative", "neutral", "positive"]), score=st.floats(-1, 1, allow_nan=False),
    probs=st.tuples(_unit, _unit, _unit), confidence=_unit, model=st.none() | _text,
).map(lambda item: item.with_(ticker_links=tuple("cashtag" for _ in item.tickers)))


def _read_back(key_value: tuple[bytes, bytes], offset: int = 9) -> Item | DeadLetter:
    return decode_scored(RawRecord(raw=key_value[1], location=f"scored/2/{offset}", kafka_topic="scored",
                                   kafka_partition=2, kafka_offset=offset))


@settings(max_examples=200, deadline=None)
@given(_items)
def test_a_scored_item_reads_back_equal_keyed_by_its_id(item):
    key, value = encode_item(item)
    assert key == item.id.encode("utf-8", "surrogatepass")
    assert json.loads(value)["kind"] == "item"
    assert _read_back((key, value)) == item


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.text(max_size=50), st.sampled_from(["parse", "score"]), st.integers(0, 2**40))
def test_a_dead_letter_reads_back_with_its_raw_bytes_keyed_by_its_location(raw, reason, stage, offset):
    dead = DeadLetter(raw=raw, reason=reason, stage=stage, location=f"news/1/{offset}", kafka_topic="news",
                      kafka_partition=1, kafka_offset=offset)
    key, value = encode_dead_letter(dead)
    assert key == f"news/1/{offset}".encode()
    assert _read_back((key, value)) == dead


def test_an_unreadable_message_is_the_stores_dead_letter_at_its_own_location():
    item = Item(id="a", ts=datetime(2024, 5, 1, tzinfo=timezone.utc), source="news", text="t", text_key="k",
                label="positive", score=0.5, probs=(0.1, 0.2, 0.7), confidence=0.7, kafka_topic="news",
                kafka_partition=0, kafka_offset=1)
    good = json.loads(encode_item(item)[1])
    bad = [b"not json", b'{"kind": "weather"}', json.dumps({**good, "probs": [1, 2]}).encode(),
           json.dumps({**good, "ts": "2024-05-01T00:00:00"}).encode(),
           json.dumps({**good, "kafka_offset": None}).encode(), json.dumps({**good, "kafka_offset": "1"}).encode()]
    for raw in bad:
        dead = _read_back((b"k", raw), offset=4)
        assert isinstance(dead, DeadLetter), raw
        assert (dead.stage, dead.location, dead.raw, dead.kafka_topic, dead.kafka_offset) == (
            "store", "scored/2/4", raw, "scored", 4)
        assert dead.reason.startswith("not a scored message: ")


def test_points_keep_the_last_version_of_each_point_in_the_order_of_those_versions():
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()

    def point(ticker: str, step: int, sentiment: float) -> SentimentPoint:
        return SentimentPoint(ticker, t0 + step * 300, 3600.0, sentiment, 2, 1.5, 0.1, (("a", 0.75), ("b", 0.25)))

    messages = encode_points([point("AAPL", 0, 0.1), point("MSFT", 0, 0.2), point("AAPL", 0, 0.3), point("AAPL", 1, 0.4)])
    assert [(key, json.loads(value)["sentiment"]) for key, value in messages] == [
        (b"MSFT", 0.2), (b"AAPL", 0.3), (b"AAPL", 0.4)]
    last = json.loads(messages[-1][1])
    assert last == {"kind": "point", "ticker": "AAPL",
                    "ts": (datetime(2024, 5, 1, tzinfo=timezone.utc) + timedelta(minutes=5)).isoformat(),
                    "half_life_s": 3600.0, "sentiment": 0.4, "n_items": 2, "ess": 1.5, "mean_score": 0.1,
                    "top_items": [{"item_id": "a", "weight": 0.75}, {"item_id": "b", "weight": 0.25}]}
