from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from connectors.duckdb.sink import DuckDBSink
from connectors.records import Item
from models.aggregation import AggregationConfig, aggregate_series
from pipeline.stream_state import StreamState, rebuild_state

CFG = AggregationConfig(half_lives_s=(600.0, 3600.0), horizon_s=7200.0, cadence_s=300.0, top_k=3)
T0 = 1_714_550_400.0


def items(n: int, seed: int = 5) -> list[Item]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + i * 37.0
        tickers = ("AAA",) if i % 3 else ("AAA", "BBB")
        out.append(Item(id=f"i{i}", ts=datetime.fromtimestamp(ts, timezone.utc), source="news", text=f"t{i}",
                        text_key=f"k{i % 7}", tickers=tickers, ticker_links=("field",) * len(tickers),
                        score=rng.uniform(-1, 1),
                        relevance=rng.uniform(-1, 0), probs=(0.2, 0.3, 0.5), confidence=0.5, label="positive",
                        model="m"))
    return out


def stream_through(state: StreamState, batch: list[Item]) -> dict:
    latest = {}
    for item in batch:
        state.novelty_n(item.text_key, item.ts.timestamp(), item.id)
        rows = [(ticker, item.id, item.ts.timestamp(), item.score, item.relevance) for ticker in item.tickers]
        for p in state.fold(rows).points:
            latest[(p.ticker, p.ts_s, p.half_life_s)] = p
    return latest


def test_in_order_stream_equals_the_batch_form():
    batch = items(400)
    latest = stream_through(StreamState(CFG), batch)
    for ticker in ("AAA", "BBB"):
        rows = [(i.id, i.ts.timestamp(), i.score, i.relevance) for i in batch if ticker in i.tickers]
        for p in aggregate_series(ticker, rows, CFG):
            assert latest[(ticker, p.ts_s, p.half_life_s)].sentiment == pytest.approx(p.sentiment, abs=1e-9)


def test_state_holds_one_horizon_of_items_however_long_the_stream():
    state = StreamState(CFG)
    stream_through(state, items(3000))  # 3000 x 37 s = 15 horizons
    per_horizon = CFG.horizon_s / 37.0
    assert len(state.tickers["AAA"]) <= per_horizon + 1
    assert len(state.novelty) <= 2 * per_horizon + 1  # novelty keeps two horizons


def test_rebuild_from_duckdb_continues_exactly_where_the_stream_was(tmp_path):
    batch = items(600)
    before, after = batch[:450], batch[450:]
    live = StreamState(CFG)
    stream_through(live, before)
    with DuckDBSink(str(tmp_path / "tp.duckdb")) as sink:
        sink.write(items=before)
        rebuilt, replayed, points = rebuild_state(sink, CFG)
    assert 0 < replayed < len(before)  # only the items near the newest one are replayed
    assert points and all(p.ts_s - CFG.horizon_s >= before[0].ts.timestamp() for p in points)
    continued, resumed = stream_through(live, after), stream_through(rebuilt, after)
    assert continued.keys() == resumed.keys()
    for key, p in continued.items():
        assert resumed[key].sentiment == pytest.approx(p.sentiment, abs=1e-9)
        assert resumed[key].n_items == p.n_items
    next_ts = T0 + len(batch) * 37.0
    assert live.novelty_n("k1", next_ts, "x") == rebuilt.novelty_n("k1", next_ts, "x") > 0
