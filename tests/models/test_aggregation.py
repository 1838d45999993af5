"""Behaviour of the recency attention: formula, grid, batch (torch) and incremental forms."""
from __future__ import annotations

import math
import pickle
import random

import pytest
import torch

from models.aggregation import (AggregationConfig, RelevanceConfig, SentimentPoint, TickerState,
                                aggregate_series, aggregate_tickers, grid_points, relevance)
from models import aggregation as aggregation_module

T0 = 1_699_999_800.0  # a multiple of the 300 s cadence
CFG = AggregationConfig(half_lives_s=(3600.0, 21600.0), horizon_s=86400.0, cadence_s=300.0,
                        top_k=3)


def reference_point(ticker, items, as_of, h, horizon, top_k):
    """The formula written out directly: the oracle both implementations must match."""
    inside = [it for it in items if as_of - horizon < it[1] <= as_of]
    if not inside:
        return None
    logits = [r - math.log(2) * (as_of - ts) / h for _, ts, _, r in inside]
    top = max(logits)
    e = [math.exp(x - top) for x in logits]
    den = math.fsum(e)
    w = [x / den for x in e]
    ranked = sorted(zip(w, [it[0] for it in inside]), key=lambda p: (-p[0], p[1]))[:top_k]
    return SentimentPoint(ticker, as_of, h, math.fsum(wi * it[2] for wi, it in zip(w, inside)),
                          len(inside), 1.0 / math.fsum(x * x for x in w),
                          math.fsum(it[2] for it in inside) / len(inside),
                          tuple((i, wi) for wi, i in ranked))


def assert_points_close(got, want, tol=1e-6):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert (a.ticker, a.ts_s, a.half_life_s, a.n_items) == (b.ticker, b.ts_s, b.half_life_s,
                                                                b.n_items)
        assert a.sentiment == pytest.approx(b.sentiment, abs=tol)
        assert a.ess == pytest.approx(b.ess, rel=tol)
        assert a.mean_score == pytest.approx(b.mean_score, abs=tol)
        assert [i for i, _ in a.top_items] == [i for i, _ in b.top_items]
        assert [w for _, w in a.top_items] == pytest.approx([w for _, w in b.top_items], abs=tol)


def random_items(n, seed, mean_gap_s=120.0, start=T0):
    rng = random.Random(seed)
    items, ts = [], start
    for i in range(n):
        ts += rng.expovariate(1.0 / mean_gap_s)
        items.append((f"it{i:05d}", ts, rng.uniform(-1, 1), rng.gauss(0.0, 0.7)))
    return items


def stream(ticker, items, cfg, pickle_every=None):
    """Feed items to a TickerState and keep the last version of each point (the sink's upsert);
    with ``pickle_every``, the state goes through pickle every that many items."""
    state, final = TickerState(ticker, cfg), {}
    for index, item in enumerate(items):
        if pickle_every and index % pickle_every == 0:
            state = pickle.loads(pickle.dumps(state))
        for point in state.add(*item):
            final[(point.ts_s, point.half_life_s)] = point
    return [final[key] for key in sorted(final)], state


# --- relevance -------------------------------------------------------------------------------

def test_relevance_terms_follow_the_documented_defaults():
    assert relevance(1.0, "news", 0) == 0.0
    assert relevance(0.5, "news", 0) == pytest.approx(math.log(0.5))
    assert relevance(1.0, "comment", 0) == pytest.approx(-0.5)
    assert relevance(1.0, "telegram", 0) == pytest.approx(-0.25)  # unknown source
    # the n-th near-duplicate weighs (1+n)^-3 of the original
    assert math.exp(relevance(1.0, "news", 1)) == pytest.approx(1 / 8)


def test_relevance_is_configurable():
    cfg = RelevanceConfig(confidence_weight=2.0, source_priors={"blog": -1.0},
                          unknown_source_prior=-3.0, novelty_weight=1.0)
    assert relevance(0.5, "blog", 3, cfg) == pytest.approx(2 * math.log(0.5) - 1.0 - math.log(4))
    assert relevance(1.0, "news", 0, cfg) == -3.0


@pytest.mark.parametrize("args", [(0.0, "news", 0), (1.5, "news", 0), (0.9, "news", -1),
                                  (float("nan"), "news", 0)])
def test_relevance_rejects_bad_input(args):
    with pytest.raises(ValueError):
        relevance(*args)


@pytest.mark.parametrize("kwargs", [dict(half_lives_s=()), dict(half_lives_s=(0.0,)),
                                    dict(half_lives_s=(60.0, 60.0)), dict(horizon_s=-1.0),
                                    dict(cadence_s=float("inf")), dict(top_k=-1)])
def test_config_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        AggregationConfig(**kwargs)


# --- grid --------------------------------------------------------------------------------------

def test_grid_is_epoch_aligned_and_skips_empty_horizons():
    # items at 10 s and 20 s past a grid point, then one 2 h later; horizon 1 h
    ts = [T0 + 10, T0 + 20, T0 + 7200 + 1]
    points = grid_points(ts, cadence_s=300.0, horizon_s=3600.0)
    assert points[0] == T0 + 300  # ceil of the first item
    assert points[-1] == T0 + 7500  # ceil of the last item
    assert all(p % 300 == 0 for p in points)
    # the first items expire at T0+3610: 3600+300 is the last point they fill; then a gap
    assert T0 + 3600 in points and T0 + 3900 not in points
    assert points == [T0 + 300 * k for k in range(1, 13)] + [T0 + 7500]


def test_grid_point_on_an_item_includes_it():
    assert grid_points([T0, T0 + 300.0], 300.0, 3600.0) == [T0, T0 + 300]
    assert grid_points([], 300.0, 3600.0) == []


def test_horizon_shorter_than_cadence_gives_no_empty_points():
    cfg = AggregationConfig(horizon_s=60.0, cadence_s=300.0, half_lives_s=(60.0,))
    items = [("a", T0 + 100, 0.5, 0.0), ("b", T0 + 290, -0.5, 0.0), ("c", T0 + 601, 0.1, 0.0)]
    assert grid_points([it[1] for it in items], 300.0, 60.0) == [T0 + 300]
    batch = aggregate_series("X", items, cfg)
    assert [(p.ts_s, p.n_items) for p in batch] == [(T0 + 300, 1)]
    assert_points_close(stream("X", items, cfg)[0], batch)


# --- batch form -------------------------------------------------------------------------------

def test_batch_matches_the_formula_at_every_grid_point():
    items = random_items(400, seed=1)
    batch = aggregate_series("AAPL", items, CFG)
    grid = grid_points([it[1] for it in items], CFG.cadence_s, CFG.horizon_s)
    want = [reference_point("AAPL", items, t, h, CFG.horizon_s, CFG.top_k)
            for t in grid for h in CFG.half_lives_s]
    assert_points_close(batch, want, tol=1e-9)


def test_batch_is_split_into_chunks_without_changing_results(monkeypatch):
    items = {"AAPL": random_items(300, seed=2), "MSFT": random_items(200, seed=3, mean_gap_s=400)}
    whole = aggregate_tickers(items, CFG)
    monkeypatch.setattr(aggregation_module, "_MAX_PAIRS_PER_CHUNK", 997)
    assert_points_close(aggregate_tickers(items, CFG), whole, tol=1e-12)
    assert {p.ticker for p in whole} == {"AAPL", "MSFT"}


def test_single_item_has_full_weight_and_empty_ticker_has_no_points():
    points = aggregate_tickers({"A": [("x", T0 + 1, 0.4, -2.0)], "B": []}, CFG)
    assert [(p.ticker, p.sentiment, p.n_items, p.ess, p.top_items) for p in points] == [
        ("A", 0.4, 1, 1.0, (("x", 1.0),)), ("A", 0.4, 1, 1.0, (("x", 1.0),))]


def test_ties_in_weight_are_broken_by_item_id():
    items = [(name, T0 + 5, 0.1, 0.0) for name in ("d", "b", "c", "a")]
    point = aggregate_series("A", items, CFG)[0]
    assert point.top_items == (("a", 0.25), ("b", 0.25), ("c", 0.25))
    assert stream("A", items, CFG)[0][0].top_items == point.top_items


@pytest.mark.parametrize("bad", [[("a", T0, 0.1, 0.0), ("a", T0 + 1, 0.2, 0.0)],
                                 [("a", T0, float("nan"), 0.0)]])
def test_batch_rejects_duplicate_ids_and_non_finite_values(bad):
    with pytest.raises(ValueError):
        aggregate_series("A", bad, CFG)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_on_cuda_matches_cpu():
    items = random_items(500, seed=4)
    assert_points_close(aggregate_series("A", items, CFG, device="cuda"),
                        aggregate_series("A", items, CFG), tol=1e-9)


# --- incremental form ----------------------------------------------------------------------

@pytest.mark.parametrize("n,seed,mean_gap_s", [(600, 5, 60.0), (400, 6, 900.0), (60, 7, 40000.0)])
def test_streaming_final_rows_equal_the_batch(n, seed, mean_gap_s):
    items = random_items(n, seed=seed, mean_gap_s=mean_gap_s)
    streamed, _ = stream("AAPL", items, CFG)
    assert_points_close(streamed, aggregate_series("AAPL", items, CFG), tol=1e-9)


def test_add_returns_due_points_and_reemits_the_provisional_one():
    state = TickerState("A", CFG)
    first = state.add("a", T0 + 10, 1.0, 0.0)
    assert [(p.ts_s, p.n_items) for p in first] == [(T0 + 300, 1)] * 2
    again = state.add("b", T0 + 200, -1.0, 0.0)  # same bucket: the provisional point again
    assert [(p.ts_s, p.n_items) for p in again] == [(T0 + 300, 2)] * 2
    later = state.add("c", T0 + 1000, 0.0, 0.0)  # closes 300, emits 600, 900, then 1200
    assert [p.ts_s for p in later[::2]] == [T0 + 600, T0 + 900, T0 + 1200]
    assert [p.n_items for p in later[::2]] == [2, 2, 3]


def test_items_expire_after_the_horizon_and_long_gaps_emit_only_non_empty_points():
    cfg = AggregationConfig(half_lives_s=(600.0,), horizon_s=1800.0, cadence_s=300.0, top_k=2)
    state = TickerState("A", cfg)
    state.add("old", T0 + 1, 1.0, 5.0)
    points = state.add("new", T0 + 86400 * 30, -1.0, 0.0)
    # "old" fills the points up to T0+1800 and then expires; the gap emits nothing else
    assert [p.ts_s - T0 for p in points] == [600, 900, 1200, 1500, 1800, 86400 * 30]
    assert points[-1].sentiment == -1.0 and points[-1].top_items == (("new", 1.0),)


def test_replayed_item_is_ignored_and_late_item_joins_without_rewriting_history():
    state = TickerState("A", CFG)
    state.add("a", T0 + 10, 1.0, 0.0)
    state.add("b", T0 + 1000, 1.0, 0.0)
    assert state.add("b", T0 + 1000, 1.0, 0.0) == []
    late = state.add("late", T0 + 20, -1.0, 0.0)
    assert [p.ts_s for p in late] == [T0 + 1200] * 2  # only the provisional point
    assert late[0].n_items == 3
    assert state.add("ancient", T0 - 2 * 86400, 0.0, 0.0) == []  # outside the horizon


def test_state_survives_pickling_mid_stream():
    items = random_items(300, seed=8)
    whole, _ = stream("A", items, CFG)
    pickled, _ = stream("A", items, CFG, pickle_every=50)
    assert_points_close(pickled, whole, tol=0)


def test_expiry_of_a_dominant_item_does_not_lose_precision():
    # one item 40 natural-log units heavier expires: naive subtraction would leave noise
    cfg = AggregationConfig(half_lives_s=(1e7,), horizon_s=3600.0, cadence_s=60.0, top_k=1)
    items = [("big", T0, 1.0, 40.0)] + [(f"s{i}", T0 + 60 * (i + 1), (-1) ** i * 0.3, 0.0)
                                        for i in range(100)]
    streamed, _ = stream("A", items, cfg)
    assert_points_close(streamed, aggregate_series("A", items, cfg), tol=1e-9)


def test_streaming_rejects_non_finite_values():
    with pytest.raises(ValueError):
        TickerState("A", CFG).add("a", T0, float("inf"), 0.0)


def test_long_stream_with_compaction_and_pickling_equals_the_batch():
    # thousands of items expire, so the state drops its expired prefix more than once
    cfg = AggregationConfig(half_lives_s=(120.0,), horizon_s=600.0, cadence_s=60.0, top_k=2)
    items = random_items(5000, seed=9, mean_gap_s=10.0)
    streamed, state = stream("A", items, cfg, pickle_every=1500)
    assert len(state) < 200
    assert_points_close(streamed, aggregate_series("A", items, cfg), tol=1e-9)


def test_seed_at_a_grid_point_continues_exactly_like_adding_every_item():
    """A restatement seeds a fresh state at its first point instead of replaying the points before."""
    rng = random.Random(11)
    items = sorted(((f"s{i}", 1_714_550_400.0 + rng.uniform(0, 2 * 86400), rng.uniform(-1, 1), rng.uniform(-2, 0))
                    for i in range(600)), key=lambda item: item[1])
    start = 1_714_550_400.0 + 300.0 * 300  # a grid point a day and a bit in
    full = TickerState("AAA", CFG)
    expected = {}
    for item in items:
        for p in full.add(*item):
            if p.ts_s >= start:
                expected[(p.ts_s, p.half_life_s)] = p
    seeded = TickerState("AAA", CFG)
    got = {(p.ts_s, p.half_life_s): p for p in seeded.seed([i for i in items if i[1] <= start], start)}
    for item in (i for i in items if i[1] > start):
        got.update({(p.ts_s, p.half_life_s): p for p in seeded.add(*item)})
    assert got.keys() == expected.keys()
    for key, p in expected.items():
        assert got[key].sentiment == pytest.approx(p.sentiment, abs=1e-9)
        assert (got[key].n_items, [t[0] for t in got[key].top_items]) == (p.n_items, [t[0] for t in p.top_items])
