"""The SQL macros agree with the torch batch form and the streaming state on a real DuckDB file."""
from __future__ import annotations

import random
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pytest

from connectors.duckdb.schema import create_schema
from connectors.duckdb.sentiment_macro import install_sentiment_macro
from models.aggregation import AggregationConfig, TickerState, aggregate_tickers

T0_US = 1_699_999_800 * 1_000_000  # on the 300 s grid
CFG = AggregationConfig(half_lives_s=(1800.0, 21600.0), horizon_s=43200.0, cadence_s=300.0,
                        top_k=4)


def make_items(seed: int = 3) -> list[tuple[str, int, float, float, tuple[str, ...]]]:
    """(id, ts in integer microseconds, score, relevance, tickers); one item names two tickers."""
    rng = random.Random(seed)
    items, ts_us = [], T0_US
    for i in range(240):
        ts_us += int(rng.expovariate(1 / 240.0) * 1e6)
        if i % 25 == 0:  # on a grid point: exactly on the horizon's edge H later
            ts_us = -(-ts_us // 300_000_000) * 300_000_000
        tickers = ("AAPL", "MSFT") if i % 17 == 0 else (rng.choice(["AAPL", "MSFT", "NVDA"]),)
        items.append((f"item-{i:04d}", ts_us, rng.uniform(-1, 1), rng.gauss(0, 0.8), tickers))
    items.append(("late-gap", ts_us + 86400 * 1_000_000, 0.9, 0.0, ("NVDA",)))  # past the horizon
    return items


def store(con: duckdb.DuckDBPyConnection, items) -> None:
    now = datetime.now(timezone.utc)
    table = pa.table({
        "id": [i[0] for i in items],
        "ts": pa.array([i[1] for i in items], pa.timestamp("us", tz="UTC")),
        "source": ["news"] * len(items), "text": ["t"] * len(items),
        "text_key": [i[0] for i in items], "novelty_n": [0] * len(items),
        "label": ["neutral"] * len(items), "score": [i[2] for i in items],
        "prob_negative": [0.0] * len(items), "prob_neutral": [1.0] * len(items),
        "prob_positive": [0.0] * len(items), "confidence": [1.0] * len(items),
        "relevance": [i[3] for i in items], "model": ["m"] * len(items),
        "ingested_at": pa.array([now] * len(items), pa.timestamp("us", tz="UTC")),
    })
    tags = pa.table({"item_id": [i[0] for i in items for _ in i[4]],
                     "ticker": [t for i in items for t in i[4]]})
    con.register("new_items", table)
    con.register("new_tags", tags)
    con.execute("INSERT INTO items BY NAME SELECT * FROM new_items")
    con.execute("INSERT INTO item_tickers SELECT *, 'field' AS link FROM new_tags")


def by_ticker(items):
    grouped: dict[str, list] = {}
    for item_id, ts_us, score, rel, tickers in items:
        for ticker in tickers:
            grouped.setdefault(ticker, []).append((item_id, ts_us / 1e6, score, rel))
    return grouped


def sql_rows(con, sql, params=()):
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def assert_row_matches(row, point, tol=1e-6):
    assert row["n_items"] == point.n_items
    assert row["sentiment"] == pytest.approx(point.sentiment, abs=tol)
    assert row["ess"] == pytest.approx(point.ess, rel=tol)
    assert row["mean_score"] == pytest.approx(point.mean_score, abs=tol)
    assert [t["item_id"] for t in row["top_items"]] == [i for i, _ in point.top_items]
    assert [t["weight"] for t in row["top_items"]] == pytest.approx(
        [w for _, w in point.top_items], abs=tol)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "tickerpulse.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    items = make_items()
    store(con, items)
    install_sentiment_macro(con)
    yield con, items, path
    con.close()


def test_series_macro_equals_the_batch_and_the_streaming_forms(db):
    con, items, _ = db
    grouped = by_ticker(items)
    batch = aggregate_tickers(grouped, CFG)
    streamed = {}
    for ticker, rows in grouped.items():
        state = TickerState(ticker, CFG)
        for row in rows:
            for p in state.add(*row):
                streamed[(p.ticker, p.ts_s, p.half_life_s)] = p
    assert sorted(streamed) == sorted((p.ticker, p.ts_s, p.half_life_s) for p in batch)
    start, stop = min(p.ts_s for p in batch), max(p.ts_s for p in batch)
    checked = 0
    for h in CFG.half_lives_s:
        rows = sql_rows(con, "SELECT *, epoch_us(ts) AS ts_us FROM sentiment_series(NULL, "
                             "to_timestamp(?), to_timestamp(?), ?, ?, horizon_s := ?, top_k := ?)",
                        [start, stop, CFG.cadence_s, h, CFG.horizon_s, CFG.top_k])
        sql = {(r["ticker"], r["ts_us"] / 1e6): r for r in rows}
        for p in (p for p in batch if p.half_life_s == h):
            assert_row_matches(sql[(p.ticker, p.ts_s)], p)
            assert_row_matches(sql[(p.ticker, p.ts_s)], streamed[(p.ticker, p.ts_s, h)])
            checked += 1
        # the macro only adds rows the grid leaves out: after a ticker's last item
        last = {t: max(ts for _, ts, _, _ in rows_) for t, rows_ in grouped.items()}
        extra = set(sql) - {(p.ticker, p.ts_s) for p in batch if p.half_life_s == h}
        assert all(ts > last[t] for t, ts in extra)
    assert checked == len(batch) > 500


def test_stored_ticker_sentiment_rows_equal_the_macro_in_sql(db):
    """Trend queries join the stored rows with the macro at another half-life, all in SQL."""
    con, items, _ = db
    batch = aggregate_tickers(by_ticker(items), CFG)
    stored = pa.table({
        "ticker": [p.ticker for p in batch],
        "ts": pa.array([int(p.ts_s) * 1_000_000 for p in batch], pa.timestamp("us", tz="UTC")),
        "half_life_s": [p.half_life_s for p in batch],
        "sentiment": [p.sentiment for p in batch], "n_items": [p.n_items for p in batch],
        "ess": [p.ess for p in batch], "mean_score": [p.mean_score for p in batch],
        "top_items": [[{"item_id": i, "weight": w} for i, w in p.top_items] for p in batch],
    })
    con.register("stored", stored)
    con.execute("INSERT INTO ticker_sentiment BY NAME SELECT * FROM stored")
    worst, n = con.execute("""
        SELECT max(abs(s.sentiment - m.sentiment)), count(*)
        FROM ticker_sentiment s
        JOIN sentiment_series(NULL, (SELECT min(ts) FROM ticker_sentiment),
                              (SELECT max(ts) FROM ticker_sentiment), 300, 1800.0,
                              horizon_s := 43200, top_k := 4) m
          ON m.ticker = s.ticker AND m.ts = s.ts AND s.half_life_s = 1800.0
    """).fetchone()
    assert n == sum(p.half_life_s == 1800.0 for p in batch)
    assert worst < 1e-6


def test_asof_macro_gives_one_row_or_none(db):
    con, items, _ = db
    nvda = [(i[0], i[1] / 1e6, i[2], i[3]) for i in items if "NVDA" in i[4]]
    point = [p for p in aggregate_tickers({"NVDA": nvda}, CFG) if p.half_life_s == 21600.0][7]
    rows = sql_rows(con, "SELECT * FROM sentiment_asof('NVDA', to_timestamp(?), 21600.0, "
                         "horizon_s := 43200, top_k := 4)", [point.ts_s])
    assert len(rows) == 1 and rows[0]["ticker"] == "NVDA"
    assert_row_matches(rows[0], point)
    # before the first item and inside the day-long gap: no value, never 0
    for empty_at in (T0_US / 1e6 - 60, nvda[-2][1] + 43200 + 600):
        assert sql_rows(con, "SELECT * FROM sentiment_asof('NVDA', to_timestamp(?), 3600.0, "
                             "horizon_s := 43200)", [empty_at]) == []
    assert sql_rows(con, "SELECT * FROM sentiment_asof('NOPE', now(), 3600.0)") == []


def test_defaults_and_a_read_only_connection(db):
    con, items, path = db
    con.close()
    reader = duckdb.connect(str(path), read_only=True)
    try:
        install_sentiment_macro(reader)
        last_ts = max(i[1] for i in items if "AAPL" in i[4]) / 1e6
        row = sql_rows(reader, "SELECT * FROM sentiment_asof('AAPL', to_timestamp(?), 3600)",
                       [last_ts])[0]
        aapl = [(i[0], i[1] / 1e6, i[2], i[3]) for i in items
                if "AAPL" in i[4] and last_ts - 3 * 86400 < i[1] / 1e6 <= last_ts]
        assert row["n_items"] == len(aapl)  # default horizon: 3 days
        assert len(row["top_items"]) == 5  # default top_k
    finally:
        reader.close()


def test_tiny_half_life_over_a_long_horizon_stays_finite_and_exact(db):
    """Decay spans thousands of e-folds (h = 1 s, H = 12 h): shifting must keep terms finite."""
    con, items, _ = db
    cfg = AggregationConfig(half_lives_s=(1.0,), horizon_s=43200.0, cadence_s=300.0, top_k=4)
    msft = [(i[0], i[1] / 1e6, i[2], i[3]) for i in items if "MSFT" in i[4]]
    points = aggregate_tickers({"MSFT": msft}, cfg)
    rows = sql_rows(con, "SELECT *, epoch_us(ts) AS ts_us FROM sentiment_series(['MSFT'], "
                         "to_timestamp(?), to_timestamp(?), 300, 1.0, horizon_s := 43200, "
                         "top_k := 4)", [points[0].ts_s, points[-1].ts_s])
    sql = {r["ts_us"] / 1e6: r for r in rows}
    assert len(points) > 50
    for p in points:
        assert_row_matches(sql[p.ts_s], p)
