"""Property tests of the recency attention (issue 3): hypothesis draws the streams."""
from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.aggregation import AggregationConfig, TickerState, aggregate_series
from models.aggregation_attention import RecencyAttention, horizon_pairs

T0 = 1_699_999_800.0  # a multiple of every cadence used here
YEAR = 365.25 * 86400.0
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])

scores = st.floats(-1.0, 1.0)
relevances = st.floats(-5.0, 5.0)
half_lives = st.floats(1.0, 1e6)


@st.composite
def item_streams(draw, max_items=40, max_gap_s=7200.0):
    """Items in event-time order with irregular gaps (including equal timestamps)."""
    n = draw(st.integers(1, max_items))
    gaps = draw(st.lists(st.floats(0.0, max_gap_s), min_size=n, max_size=n))
    ts, items = T0, []
    for i, gap in enumerate(gaps):
        ts += gap
        items.append((f"i{i:03d}", ts, draw(scores), draw(relevances)))
    return items


@PROPERTY_SETTINGS
@given(items=item_streams(), h=half_lives)
def test_weights_sum_to_one(items, h):
    cfg = AggregationConfig(half_lives_s=(h,), horizon_s=86400.0, cadence_s=600.0,
                            top_k=len(items))  # the explanation then lists every weight
    for point in aggregate_series("T", items, cfg):
        assert len(point.top_items) == point.n_items
        assert math.fsum(w for _, w in point.top_items) == pytest.approx(1.0, abs=1e-12)
        assert min(w for _, w in point.top_items) >= 0.0
        assert 1.0 - 1e-9 <= point.ess <= point.n_items + 1e-9


@PROPERTY_SETTINGS
@given(items=item_streams(), seed=st.integers(0, 2**32 - 1))
def test_result_does_not_depend_on_item_order(items, seed):
    cfg = AggregationConfig(horizon_s=43200.0, cadence_s=600.0)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    for a, b in zip(aggregate_series("T", items, cfg), aggregate_series("T", shuffled, cfg),
                    strict=True):
        assert a.sentiment == pytest.approx(b.sentiment, abs=1e-12)
        assert a.top_items == b.top_items or all(
            x[0] == y[0] and x[1] == pytest.approx(y[1], abs=1e-12)
            for x, y in zip(a.top_items, b.top_items, strict=True))


@PROPERTY_SETTINGS
@given(h=st.floats(60.0, 1e5), r=relevances, s_old=scores, s_new=scores)
def test_after_one_half_life_relative_weight_halves(h, r, s_old, s_new):
    cfg = AggregationConfig(half_lives_s=(h,), horizon_s=10 * h, cadence_s=60.0, top_k=2)
    fresh_ts = T0 + 60.0 * math.ceil(h / 60.0)  # on the grid, so its age is exactly 0
    items = [("old", fresh_ts - h, s_old, r), ("new", fresh_ts, s_new, r)]
    point = [p for p in aggregate_series("T", items, cfg) if p.ts_s == fresh_ts][0]
    weights = dict(point.top_items)
    assert weights["old"] / weights["new"] == pytest.approx(0.5, rel=1e-9)


@PROPERTY_SETTINGS
@given(items=item_streams(max_gap_s=3600.0))
def test_infinite_half_life_gives_the_relevance_weighted_mean(items):
    cfg = AggregationConfig(half_lives_s=(1e18,), horizon_s=1e9, cadence_s=3600.0)
    last = aggregate_series("T", items, cfg)[-1]
    top = max(r for *_, r in items)
    weights = [math.exp(r - top) for *_, r in items]
    expected = math.fsum(w * s for w, (_, _, s, _) in zip(weights, items)) / math.fsum(weights)
    assert last.n_items == len(items)
    assert last.sentiment == pytest.approx(expected, abs=1e-9)


@PROPERTY_SETTINGS
@given(items=item_streams(max_items=20, max_gap_s=YEAR), h=half_lives)
def test_ages_of_years_stay_finite_in_both_forms(items, h):
    cfg = AggregationConfig(half_lives_s=(h,), horizon_s=20 * YEAR, cadence_s=30 * 86400.0)
    batch = aggregate_series("T", items, cfg)
    state = TickerState("T", cfg)
    streamed = {}
    for item in items:
        for p in state.add(*item):
            streamed[p.ts_s] = p
    assert len(batch) == len(streamed)
    for p in batch:
        q = streamed[p.ts_s]
        for value in (p.sentiment, p.ess, q.sentiment, q.ess):
            assert math.isfinite(value)
        assert -1.0 - 1e-12 <= p.sentiment <= 1.0 + 1e-12
        assert q.sentiment == pytest.approx(p.sentiment, abs=1e-6)
        assert q.ess == pytest.approx(p.ess, rel=1e-6)


@PROPERTY_SETTINGS
@given(items=item_streams(max_items=60, max_gap_s=20000.0),
       cadence=st.sampled_from([60.0, 300.0, 3600.0]), horizon=st.floats(600.0, 86400.0),
       top_k=st.integers(0, 4))
def test_streaming_rows_equal_the_batch(items, cadence, horizon, top_k):
    cfg = AggregationConfig(half_lives_s=(900.0, 7200.0), horizon_s=horizon, cadence_s=cadence,
                            top_k=top_k)
    state, final = TickerState("T", cfg), {}
    for item in items:
        for p in state.add(*item):
            final[(p.ts_s, p.half_life_s)] = p
    batch = aggregate_series("T", items, cfg)
    assert sorted(final) == [(p.ts_s, p.half_life_s) for p in batch]
    for p in batch:
        q = final[(p.ts_s, p.half_life_s)]
        assert q.n_items == p.n_items
        assert q.sentiment == pytest.approx(p.sentiment, abs=1e-6)
        assert q.ess == pytest.approx(p.ess, rel=1e-6)
        assert q.mean_score == pytest.approx(p.mean_score, abs=1e-6)
        assert [i for i, _ in q.top_items] == [i for i, _ in p.top_items]
        assert [w for _, w in q.top_items] == pytest.approx([w for _, w in p.top_items], abs=1e-6)


@PROPERTY_SETTINGS
@given(items=item_streams(max_gap_s=20000.0), horizon=st.floats(60.0, 7200.0))
def test_empty_horizon_gives_no_value_never_zero(items, horizon):
    cfg = AggregationConfig(horizon_s=horizon, cadence_s=300.0)
    state = TickerState("T", cfg)
    streamed = [p for item in items for p in state.add(*item)]
    for p in aggregate_series("T", items, cfg) + streamed:
        assert p.n_items >= 1
        assert any(p.ts_s - horizon < ts <= p.ts_s for _, ts, _, _ in items)
    assert aggregate_series("T", [], cfg) == []


def test_hundred_thousand_items_per_ticker_stay_exact_and_finite():
    n = 100_000
    rng = random.Random(11)
    items = [(f"i{i:06d}", T0 + i * 30.0, rng.uniform(-1, 1), rng.gauss(0, 2)) for i in range(n)]
    cfg = AggregationConfig(half_lives_s=(1.0, 3600.0, 1e9), horizon_s=10 * YEAR,
                            cadence_s=30.0 * n, top_k=3)
    batch = aggregate_series("T", items, cfg)[-3:]  # the point after the last item
    assert [p.n_items for p in batch] == [n] * 3
    assert all(math.isfinite(p.sentiment) and math.isfinite(p.ess) for p in batch)
    state = TickerState("T", cfg)
    for item in items[:-1]:
        state.add(*item)
    for p, q in zip(batch, state.add(*items[-1]), strict=True):
        assert q.sentiment == pytest.approx(p.sentiment, abs=1e-6)
        assert q.ess == pytest.approx(p.ess, rel=1e-6)


@PROPERTY_SETTINGS
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=20), seed=st.integers(0, 999))
def test_segment_softmax_weights_sum_to_one_per_query(lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    n_items = max(lengths) + 5
    lo = torch.randint(0, 5, (len(lengths),), generator=gen)
    hi = lo + torch.tensor(lengths)
    pair_query, pair_item = horizon_pairs(lo, hi)
    item_ts = torch.sort(torch.rand(n_items, generator=gen, dtype=torch.float64) * 1e8).values
    out = RecencyAttention()(item_ts, torch.rand(n_items, dtype=torch.float64, generator=gen),
                             torch.randn(n_items, dtype=torch.float64, generator=gen) * 50,
                             torch.full((len(lengths),), 2e8, dtype=torch.float64),
                             torch.full((len(lengths),), 10.0, dtype=torch.float64),
                             pair_query, pair_item)
    sums = torch.zeros(len(lengths), dtype=torch.float64).index_add_(0, pair_query, out.weight)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12)
    assert out.n_items.tolist() == lengths


@PROPERTY_SETTINGS
@given(items=item_streams(max_items=50, max_gap_s=1800.0), seed=st.integers(0, 999),
       top_k=st.integers(1, 4))
def test_late_items_keep_the_provisional_point_exact(items, seed, top_k):
    """Out of order arrival: every emitted provisional point equals the formula over the state."""
    rng = random.Random(seed)
    arrival = sorted(items, key=lambda it: it[1] + rng.uniform(0.0, 5000.0))  # up to ~1.4 h late
    cfg = AggregationConfig(half_lives_s=(600.0, 1e5), horizon_s=7200.0, cadence_s=300.0,
                            top_k=top_k)
    state, accepted = TickerState("T", cfg), []
    for item in arrival:
        points = state.add(*item)
        if not points:
            continue
        as_of = points[-1].ts_s
        accepted.append(item)
        inside = [it for it in accepted if as_of - cfg.horizon_s < it[1] <= as_of]
        for point in points[-2:]:  # the provisional point, one per half-life
            logits = {it[0]: it[3] - math.log(2) * (as_of - it[1]) / point.half_life_s
                      for it in inside}
            top = max(logits.values())
            den = math.fsum(math.exp(x - top) for x in logits.values())
            ranked = sorted((-math.exp(x - top) / den, i) for i, x in logits.items())
            expected = ranked[:top_k]
            assert point.n_items == len(inside)
            assert [w for _, w in point.top_items] == pytest.approx(
                [-w for w, _ in expected], abs=1e-9)
            # ids must match except where weights tie to within rounding (then either order)
            clear = [j for j, (w, _) in enumerate(expected)
                     if all(abs(w - other) > 1e-12 for other, _ in ranked[:j] + ranked[j + 1:])]
            assert [point.top_items[j][0] for j in clear] == [expected[j][1] for j in clear]
            assert point.sentiment == pytest.approx(math.fsum(
                math.exp(logits[it[0]] - top) / den * it[2] for it in inside), abs=1e-9)


T0_US = 1_714_557_600_900_000  # 2024-05-01 10:00:00.9 UTC: a real epoch, where float grids drift


@st.composite
def subsecond_cases(draw):
    """A sub-second cadence, a horizon, and items in whole µs, many placed on a grid point, exactly
    one horizon before one, or a µs either side of that edge."""
    cadence_us = draw(st.sampled_from([300_000, 100_000, 700_000, 1_100_000, 250_000, 333_333, 30_000]))
    horizon_us = draw(st.sampled_from([1_000_000, 2_500_000, 60_000_000, 3_600_000_000]))
    span = draw(st.integers(0, 2 * horizon_us))
    k0 = T0_US // cadence_us
    ts_us = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["any", "grid", "edge", "edge-1", "edge+1"]))
        t = T0_US + draw(st.integers(0, span))
        if kind != "any":
            g = (k0 + draw(st.integers(0, span // cadence_us + 1))) * cadence_us
            t = {"grid": g, "edge": g - horizon_us, "edge-1": g - horizon_us - 1, "edge+1": g - horizon_us + 1}[kind]
        ts_us.append(t)
    if draw(st.booleans()):  # the audit's case: an item exactly H after another
        ts_us.append(ts_us[0] + horizon_us)
    return cadence_us, horizon_us, sorted(ts_us)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=subsecond_cases())
def test_subsecond_cadence_points_follow_the_membership_rule_in_integer_us(case):
    """Every batch and incremental point, at its stored time in µs, holds exactly the items with
    t - H < t_i <= t (integer µs), on exactly the grid points whose horizon is non-empty."""
    from_us = lambda us: us / 1_000_000  # noqa: E731 (what datetime.timestamp() gives for a stored time)
    cadence_us, horizon_us, ts_us = case
    cfg = AggregationConfig(horizon_s=horizon_us / 1e6, cadence_s=cadence_us / 1e6, top_k=len(ts_us))
    items = [(f"i{n:02d}", from_us(t), 0.1 * (n % 7) - 0.3, 0.0) for n, t in enumerate(ts_us)]
    members = {}  # grid point (µs) -> ids in its horizon, by the definition
    for k in range(-(-ts_us[0] // cadence_us), -(-ts_us[-1] // cadence_us) + 1):
        t = k * cadence_us
        inside = {item[0] for item, t_i in zip(items, ts_us) if t - horizon_us < t_i <= t}
        if inside:
            members[t] = inside
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)

    def stored_us(point) -> int:  # the as-of time as ticker_sentiment.ts holds it (sentiment_row)
        return (datetime.fromtimestamp(point.ts_s, tz=timezone.utc) - epoch) // timedelta(microseconds=1)

    batch = aggregate_series("T", items, cfg)
    stored = [stored_us(p) for p in batch]
    assert stored == sorted(members)  # the grid, as it is written to ticker_sentiment
    for point, t in zip(batch, stored):
        assert point.n_items == len(members[t]) and {i for i, _ in point.top_items} == members[t], from_us(t)
    state, streamed = TickerState("T", cfg), {}
    for item in items:
        for point in state.add(*item):
            streamed[stored_us(point)] = point.n_items
    assert streamed == {t: len(ids) for t, ids in members.items()}
