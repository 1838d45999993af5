"""``Item.with_`` is the stages' copy-with-changes: it must be exactly ``dataclasses.replace``."""
import dataclasses
import pickle
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from connectors.records import Item

BASE = Item("id-1", datetime(2024, 5, 1, tzinfo=timezone.utc), "news", "Acme beats estimates", "k1",
            ("ACME",), ("cashtag",), kafka_topic="news", kafka_partition=3, kafka_offset=17)

CHANGES = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=8),
    "ts": st.datetimes(timezones=st.just(timezone.utc)),
    "tickers": st.tuples(st.sampled_from(["AAPL", "MSFT"])),
    "novelty_n": st.integers(0, 10**6),
    "label": st.sampled_from(["negative", "neutral", "positive"]),
    "score": st.floats(-1, 1),
    "probs": st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
    "relevance": st.floats(0, 1) | st.none(),
    "model": st.text(max_size=12),
})


@given(CHANGES)
def test_with_is_dataclasses_replace(changes):
    copy = BASE.with_(**changes)
    assert copy == dataclasses.replace(BASE, **changes)
    assert hash(copy) == hash(dataclasses.replace(BASE, **changes))
    assert pickle.loads(pickle.dumps(copy)) == copy
    assert BASE.novelty_n == 0 and BASE.label is None  # the original is untouched


def test_the_copy_is_frozen_like_the_original():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.with_(score=0.5).score = 0.1


def test_an_unknown_field_is_refused_as_replace_refuses_it():
    with pytest.raises(TypeError, match="sentiment"):
        BASE.with_(sentiment=0.5)
    with pytest.raises(TypeError):
        dataclasses.replace(BASE, sentiment=0.5)
