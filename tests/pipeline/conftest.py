"""Shared checks of the streaming tests."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from connectors.duckdb.sentiment_macro import install_sentiment_macro
from models.aggregation import AggregationConfig, grid_points


@pytest.fixture
def points_equal_the_macro():
    """``check(db, cfg)``: every stored point equals ``sentiment_series`` over the stored items."""
    return _points_equal_the_macro


def _points_equal_the_macro(db: Path, cfg: AggregationConfig) -> int:
    """Every stored point equals ``sentiment_series`` over the stored items, and every grid point
    of every ticker is stored; returns how many points were compared."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        install_sentiment_macro(con)
        rows = con.execute("SELECT t.ticker, epoch(i.ts) FROM items i JOIN item_tickers t ON t.item_id = i.id"
                           ).fetchall()
        expected = {(ticker, ts, h) for ticker in {r[0] for r in rows}
                    for ts in grid_points([r[1] for r in rows if r[0] == ticker], cfg.cadence_s, cfg.horizon_s)
                    for h in cfg.half_lives_s}
        stored = {(r[0], r[1], r[2]): r[3:] for r in con.execute(
            "SELECT ticker, epoch(ts), half_life_s, sentiment, n_items, ess, mean_score, "
            "list_sort([t.weight FOR t IN top_items]) FROM ticker_sentiment").fetchall()}
        assert stored.keys() == expected
        start, stop = min(ts for _, ts, _ in expected), max(ts for _, ts, _ in expected)
        macro = {}
        for h in cfg.half_lives_s:
            for r in con.execute(
                    "SELECT ticker, epoch(ts), half_life_s, sentiment, n_items, ess, mean_score, "
                    "list_sort([t.weight FOR t IN top_items]) FROM sentiment_series(NULL, to_timestamp(?), "
                    "to_timestamp(?), ?, ?, horizon_s := ?, top_k := ?)",
                    [start, stop, cfg.cadence_s, h, cfg.horizon_s, cfg.top_k]).fetchall():
                macro[(r[0], r[1], r[2])] = r[3:]
    finally:
        con.close()
    for key, (sentiment, n_items, ess, mean_score, weights) in stored.items():
        m_sentiment, m_n, m_ess, m_mean, m_weights = macro[key]
        assert n_items == m_n, key
        assert (sentiment, ess, mean_score) == pytest.approx((m_sentiment, m_ess, m_mean), rel=1e-6, abs=1e-6), key
        assert weights == pytest.approx(m_weights, rel=1e-6, abs=1e-9), key
    return len(stored)
