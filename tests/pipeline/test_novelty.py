from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.novelty import NoveltyTracker, novelty_counts


def test_counts_earlier_copies_inside_the_horizon():
    entries = [(100.0, "c"), (0.0, "a"), (50.0, "b"), (50.0, "a2"), (200.0, "d")]
    # order by (ts, id): a@0, a2@50, b@50, c@100, d@200; horizon 100 -> t - 100 < t_j
    assert novelty_counts(entries, 100.0) == [2, 0, 2, 1, 0]


def test_an_item_exactly_one_horizon_old_no_longer_counts():
    assert novelty_counts([(0.0, "a"), (10.0, "b")], 10.0) == [0, 0]
    assert novelty_counts([(0.0, "a"), (9.999, "b")], 10.0) == [0, 1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50).map(float), st.text("abc", min_size=1, max_size=2)), unique=True, max_size=30),
       st.integers(1, 30).map(float))
def test_tracker_in_event_time_order_equals_the_batch_rule(entries, horizon):
    expected = dict(zip(entries, novelty_counts(entries, horizon)))
    tracker = NoveltyTracker(horizon)
    for ts, item_id in sorted(entries):
        assert tracker.observe("key", ts, item_id) == expected[(ts, item_id)]


def test_tracker_replay_is_not_counted_twice_and_state_is_bounded():
    tracker = NoveltyTracker(horizon_s=10.0)
    assert tracker.observe("k", 1.0, "a") == 0
    assert tracker.observe("k", 2.0, "b") == 1
    assert tracker.observe("k", 2.0, "b") == 1
    rng = random.Random(0)
    for i in range(5000):
        tracker.observe(f"key{rng.randrange(50)}", 100.0 + i, f"id{i}")
    assert len(tracker) <= 2 * 10 + 1  # what the retention of two horizons keeps, nothing older
