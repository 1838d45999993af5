"""The trend macros on a known database: series, volume, sources, movers, shocks, why."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.duckdb.schema import create_schema
from dashboards.sql import (SHOCK_K, SHOCK_MIN_BASELINE_ITEMS, SHOCK_MIN_ITEMS, grid_from_rows, grid_shocks,
                            grid_window, install_trend_sql, sentiment_grid, trend_series, why_items, window_rows)


@pytest.fixture(autouse=True)
def _clock(times):
    global START, TURN, END
    START, TURN, END = times


@pytest.fixture
def con(trend_db):
    """Read-only, as every reader opens the file: the macros must install there."""
    connection = duckdb.connect(trend_db, read_only=True)
    install_trend_sql(connection)
    yield connection
    connection.close()


def rows(con, sql: str, params: list | None = None) -> list[dict]:
    result = con.execute(sql, params or [])
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def asof(con, ticker: str, at: datetime, half_life_s: float) -> float | None:
    found = con.execute("SELECT sentiment FROM sentiment_asof(?, ?, ?)", [ticker, at, half_life_s]).fetchall()
    return found[0][0] if found else None


def test_trend_buckets_count_items_and_use_the_recency_macro_at_each_end(con):
    since, until = START - timedelta(hours=2), START + timedelta(hours=3, minutes=20)
    series = rows(con, "SELECT * FROM trend('AAPL', ?, ?, 3600, 7200)", [since, until])
    assert [r["bucket"] for r in series] == [START + timedelta(hours=h) for h in range(-2, 4)]
    # one AAPL item every 10 minutes from 06:00; the partial bucket counts up to `until` included
    assert [r["n_items"] for r in series] == [0, 0, 6, 6, 6, 3]
    assert series[0]["sentiment"] is None and series[0]["mean_score"] is None  # nothing said yet
    assert series[1]["sentiment"] == pytest.approx(0.7)  # as of 06:00: the first item, at 06:00
    assert series[2]["mean_score"] == pytest.approx(0.8)
    assert series[-1]["as_of"] == until  # the last, partial bucket is valued at `until`
    for r in series[2:]:
        assert r["sentiment"] == pytest.approx(asof(con, "AAPL", r["as_of"], 7200), abs=1e-9)
        assert r["n_positive"] == r["n_items"]


def test_trend_series_is_the_macro_for_the_cli(con):
    columns, series = trend_series(con, "MSFT", START, END, 21600, 3600)
    assert columns[:3] == ["bucket", "as_of", "n_items"] and "sentiment" in columns
    assert [row[2] for row in series] == [36, 36]


def test_recency_sentiment_turns_faster_than_the_horizon_mean(con):
    point = rows(con, "SELECT * FROM trend('AAPL', ?, ?, 3600, 3600)", [TURN, TURN + timedelta(hours=3)])[-1]
    assert point["sentiment"] < -0.5 < point["horizon_mean"] + 0.5  # recency has turned, the mean lags
    assert point["horizon_mean"] > 0


def test_volume_counts_per_ticker_bucket_and_label(con):
    volume = rows(con, "SELECT * FROM volume(?, ?, 3600)", [START, START + timedelta(hours=2)])
    by_key = {(r["ticker"], r["bucket"]): r for r in volume}
    assert by_key[("AAPL", START)]["n_items"] == 6 and by_key[("AAPL", START)]["n_positive"] == 6
    assert by_key[("MSFT", START)]["n_items"] == 6
    assert by_key[("MSFT", START)]["n_neutral"] == 3 and by_key[("MSFT", START)]["n_positive"] == 3
    assert by_key[("TSLA", START)]["n_items"] == 1 and ("TSLA", START + timedelta(hours=1)) not in by_key


def test_by_source_breaks_a_ticker_down_with_shares(con):
    sources = rows(con, "SELECT * FROM by_source(?, ?) WHERE ticker = 'AAPL'", [START, END])
    assert {r["source"]: r["n_items"] for r in sources} == {"news": 49, "comment": 24}
    assert sum(r["share"] for r in sources) == pytest.approx(1.0)


def test_movers_rank_the_largest_change_first(con):
    movers = rows(con, "SELECT * FROM movers(?, 14400, 3600, 5)", [TURN + timedelta(hours=2)])
    assert movers[0]["ticker"] == "AAPL" and movers[0]["change"] < -1.0
    assert movers[0]["sentiment_now"] == pytest.approx(asof(con, "AAPL", TURN + timedelta(hours=2), 3600))
    assert movers[0]["sentiment_before"] == pytest.approx(asof(con, "AAPL", TURN - timedelta(hours=2), 3600))
    assert movers[0]["n_new"] == 24
    assert [abs(m["change"]) for m in movers] == sorted((abs(m["change"]) for m in movers), reverse=True)


def test_shocks_flag_the_turn_and_nothing_in_steady_series(con):
    # hourly buckets: 6 AAPL items in each, enough support for the default rule
    shocks = rows(con, "SELECT * FROM shocks(?, ?, 3600, 3600)", [START, END])
    assert shocks and {s["ticker"] for s in shocks} == {"AAPL"}
    assert all(TURN < s["ts"] <= TURN + timedelta(hours=2) for s in shocks)  # the first bad item is at TURN
    assert all(s["z"] < -3 and s["n_items"] == 6 and s["baseline_items"] >= 30 for s in shocks)
    stricter = rows(con, "SELECT * FROM shocks(?, ?, 3600, 3600, k := 10)", [START, END])
    assert len(stricter) < len(shocks)
    # 15-minute buckets hold one or two items: too few to call anything a shock
    assert rows(con, "SELECT * FROM shocks(?, ?, 900, 3600)", [START, END]) == []


def test_why_lists_the_heaviest_items_of_the_ticker(con):
    why = rows(con, "SELECT * FROM why('AAPL', ?, 3600, 5)", [END])
    assert [r["rank"] for r in why] == [1, 2, 3, 4, 5]
    assert all(r["item_id"].startswith("AAPL-") for r in why)
    weights = [r["weight"] for r in why]
    assert weights == sorted(weights, reverse=True) and 0 < sum(weights) < 1
    assert why[0]["text"].startswith("<script>")  # stored as given; the views escape it


def test_dead_letter_summary_groups_by_stage_and_reason(con):
    assert [(r["stage"], r["reason"], r["n"]) for r in rows(con, "SELECT * FROM dead_letter_summary()")] == [
        ("parse", "broken JSON", 1), ("parse", "missing text", 1)]


def test_macros_on_an_empty_database(tmp_path):
    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    create_schema(con)
    install_trend_sql(con)
    now = datetime.now(timezone.utc)
    assert rows(con, "SELECT * FROM movers(?, 3600, 3600)", [now]) == []
    assert rows(con, "SELECT * FROM why('AAPL', ?, 3600)", [now]) == []
    series = rows(con, "SELECT * FROM trend('AAPL', ?, ?, 3600, 3600)", [now - timedelta(hours=2), now])
    assert all(r["n_items"] == 0 and r["sentiment"] is None for r in series)


def test_sentiment_grid_is_sentiment_series_for_every_ticker(con):
    """The dashboard's bucketed grid gives the macro's values and horizon counts at the same times."""
    for sources, half_life in ((None, 7200), (["news"], 900), (["comment"], 86400)):
        grid = sentiment_grid(con, END, 48, 900, half_life, sources=sources)
        series = rows(con, "SELECT ticker, ts, sentiment, n_items FROM sentiment_series(NULL, ?, ?, 900, ?, "
                           "sources := ?)", [END - timedelta(seconds=47 * 900), END, half_life, sources])
        assert len(series) == int((grid.horizon_items > 0).sum()) > 0
        for r in series:
            t, p = grid.tickers.index(r["ticker"]), grid.as_of.index(r["ts"])
            assert grid.sentiment[t, p] == pytest.approx(r["sentiment"], abs=1e-12)
            assert grid.horizon_items[t, p] == r["n_items"]
    assert np.isnan(grid.sentiment[grid.horizon_items == 0]).all()


def test_sentiment_grid_counts_each_bucket_like_the_volume_macro(con):
    grid = sentiment_grid(con, END, 12, 3600, 3600, tickers=["AAPL", "NOPE"])
    assert grid.tickers == ["AAPL", "NOPE"] and grid.as_of[-1] == END
    assert grid.n_items[1].sum() == 0 and np.isnan(grid.sentiment[1]).all()
    # buckets are (as_of - 1 h, as_of]: AAPL every 10 minutes from 06:00 (left out: its bucket ends at 06:00),
    # and the last bucket has 17:10 ... 17:50 and the 17:59 item
    assert grid.n_items[0].tolist() == [6] * 12
    assert (grid.n_positive[0] + grid.n_neutral[0] + grid.n_negative[0]).tolist() == grid.n_items[0].tolist()
    assert grid.mean_score[0][0] == pytest.approx(0.8)


def test_sentiment_grid_refuses_a_step_that_does_not_divide_the_horizon(con):
    with pytest.raises(ValueError, match="whole number of steps"):
        sentiment_grid(con, END, 10, 7000, 3600)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["A", "B"]), st.integers(0, 2 * 86400), st.floats(-1, 1),
                          st.floats(-4, 1), st.sampled_from(["news", "comment"])), min_size=1, max_size=40),
       st.sampled_from([300, 900, 3600, 21600]), st.sampled_from([900.0, 7200.0, 86400.0]), st.integers(1, 30),
       st.integers(0, 2 * 86400))
def test_sentiment_grid_matches_the_macro_on_any_items(items, step, half_life, n_points, until_s):
    con = duckdb.connect()
    create_schema(con)
    install_trend_sql(con)
    for n, (ticker, ts_s, score, relevance, source) in enumerate(items):
        con.execute("INSERT INTO items VALUES (?, to_timestamp(?), ?, 't', NULL, NULL, NULL, 'k', 0, 'neutral', ?,"
                    " 0, 1, 0, 1, ?, 'm', now(), NULL, NULL, NULL)", [f"i{n}", 1.7e9 + ts_s, source, score, relevance])
        con.execute("INSERT INTO item_tickers VALUES (?, ?, 'cashtag')", [f"i{n}", ticker])
    until = datetime.fromtimestamp(1.7e9 + until_s, timezone.utc)
    grid = sentiment_grid(con, until, n_points, step, half_life, sources=["news"])
    series = rows(con, "SELECT ticker, ts, sentiment, n_items FROM sentiment_series(NULL, ?, ?, ?, ?, sources := ['news'])",
                  [until - timedelta(seconds=(n_points - 1) * step), until, step, half_life])
    assert len(series) == int((grid.horizon_items > 0).sum())
    for r in series:
        t, p = grid.tickers.index(r["ticker"]), grid.as_of.index(r["ts"])
        assert grid.sentiment[t, p] == pytest.approx(r["sentiment"], abs=1e-9)
        assert grid.horizon_items[t, p] == r["n_items"]
    con.close()


def test_why_items_is_the_why_macro(con):
    """The why panel from the grid's rows: the macro's items, order, weights and links."""
    for ticker, half_life, sources in (("AAPL", 3600, None), ("MSFT", 900, ["news"]), ("AAPL", 86400, ["comment"])):
        rows = window_rows(con, *grid_window(END, 48, 900), sources)
        by_macro = rows_of_why(con, ticker, END, half_life, 10, sources)
        found = why_items(con, rows, ticker, half_life, 10)
        assert [r["item_id"] for r in found] == [r["item_id"] for r in by_macro] and len(found) == 10
        for mine, theirs in zip(found, by_macro):
            assert mine["weight"] == pytest.approx(theirs["weight"], rel=1e-9, abs=1e-12)
            assert {k: v for k, v in mine.items() if k != "weight"} == {k: v for k, v in theirs.items() if k != "weight"}
    assert why_items(con, rows, "NOPE", 3600) == []


def rows_of_why(con, ticker: str, at: datetime, half_life_s: float, top_n: int, sources: list[str] | None) -> list[dict]:
    return rows(con, "SELECT * FROM why(?, ?, ?, ?, sources := ?)", [ticker, at, half_life_s, top_n, sources])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B"]), st.integers(0, 4 * 86400), st.sampled_from([0.5, -0.25, 1.0]),
                          st.sampled_from([0.0, -0.5, -3.0, 0.25]), st.sampled_from(["news", "comment"])),
                min_size=1, max_size=40),
       st.sampled_from([900.0, 7200.0, 86400.0]), st.integers(1, 6), st.integers(0, 4 * 86400),
       st.sampled_from([None, ["news"]]))
def test_why_items_matches_the_macro_on_any_items(items, half_life, top_n, until_s, sources):
    """Few distinct times, scores and relevances: ties in the logit, broken by the item id as the macro does."""
    con = duckdb.connect()
    create_schema(con)
    install_trend_sql(con)
    for n, (ticker, ts_s, score, relevance, source) in enumerate(items):
        ts_s -= ts_s % 1800  # many items at the same time
        con.execute("INSERT INTO items VALUES (?, to_timestamp(?), ?, 't', NULL, NULL, NULL, 'k', 0, 'neutral', ?,"
                    " 0, 1, 0, 1, ?, 'm', now(), NULL, NULL, NULL)", [f"i{(n * 7) % 41}-{n}", 1.7e9 + ts_s, source,
                                                                     score, relevance])
        con.execute("INSERT INTO item_tickers VALUES (?, ?, ?)", [f"i{(n * 7) % 41}-{n}", ticker, "cashtag" if n % 2 else "name"])
    until = datetime.fromtimestamp(1.7e9 + until_s, timezone.utc)
    rows_ = window_rows(con, *grid_window(until, 3, 3600), sources)
    for ticker in ("A", "B"):
        by_macro = rows_of_why(con, ticker, until, half_life, top_n, sources)
        found = why_items(con, rows_, ticker, half_life, top_n)
        assert [(r["rank"], r["item_id"], r["link"]) for r in found] == [(r["rank"], r["item_id"], r["link"]) for r in by_macro]
        assert [r["weight"] for r in found] == pytest.approx([r["weight"] for r in by_macro], rel=1e-9, abs=1e-12)
    con.close()


def test_grid_from_rows_refuses_rows_of_another_window(con):
    rows_ = window_rows(con, *grid_window(END, 48, 900))
    with pytest.raises(ValueError, match="grid window"):
        grid_from_rows(rows_, 24, 900, 3600)


def _jumping_db(path: str, per_bucket: int) -> duckdb.DuckDBPyConnection:
    """One ticker: `per_bucket` items every 15 min at +0.5 for 6 h, then the same count at -0.9."""
    con = duckdb.connect(path)
    create_schema(con)
    install_trend_sql(con)
    for k in range(28):
        for m in range(per_bucket):
            ts = START + timedelta(minutes=15 * k + 1 + m)
            score = 0.5 + 0.01 * (k % 3) if k < 24 else -0.9
            con.execute("INSERT INTO items VALUES (?, ?, 'news', 't', NULL, NULL, NULL, 'k', 0, 'neutral', ?,"
                        " 0, 1, 0, 1, 0, 'm', now(), NULL, NULL, NULL)", [f"i{k}-{m}", ts, score])
            con.execute("INSERT INTO item_tickers VALUES (?, 'X', 'cashtag')", [f"i{k}-{m}"])
    return con


def test_a_shock_needs_items_behind_it(tmp_path):
    """One item a bucket: the old rule called the turn a shock of many sigma; the grid rule wants support."""
    until = START + timedelta(hours=7)
    sparse = _jumping_db(str(tmp_path / "sparse.duckdb"), per_bucket=1)
    old_rule = rows(sparse, "SELECT * FROM shocks(?, ?, 900, 3600, min_std := 0.02, min_items := 0, "
                            "min_baseline_items := 0)", [START, until])  # the rule before: no item count
    assert old_rule and min(s["z"] for s in old_rule) < -10  # flagged on a single item
    assert rows(sparse, "SELECT * FROM shocks(?, ?, 900, 3600)", [START, until]) == []
    assert grid_shocks(sentiment_grid(sparse, until, 28, 900, 3600)) == []
    dense = _jumping_db(str(tmp_path / "dense.duckdb"), per_bucket=SHOCK_MIN_ITEMS)
    found = grid_shocks(sentiment_grid(dense, until, 28, 900, 3600))
    assert found and {s["ticker"] for s in found} == {"X"} and all(s["z"] < -SHOCK_K for s in found)
    assert all(s["n_items"] >= SHOCK_MIN_ITEMS and s["baseline_items"] >= SHOCK_MIN_BASELINE_ITEMS for s in found)
    assert min(s["ts"] for s in found) == START + timedelta(hours=6, minutes=15)  # the first bad bucket's end
    by_sql = rows(dense, "SELECT * FROM shocks(?, ?, 900, 3600)", [until - timedelta(seconds=27 * 900), until])
    assert [(s["ts"], s["n_items"], s["baseline_items"]) for s in by_sql] == [
        (s["ts"], s["n_items"], s["baseline_items"]) for s in found]  # one rule, in SQL and on the grid
    assert [s["z"] for s in by_sql] == pytest.approx([s["z"] for s in found])


@pytest.mark.parametrize("trailing_n, earlier, flagged", [(9, 4, False), (9, 5, True), (8, 4, True), (7, 3, False)])
def test_a_shock_needs_max_3_trailing_n_over_2_earlier_points(tmp_path, trailing_n, earlier, flagged):
    """docs/sql.md: at least max(3, trailing_n / 2) earlier points; 4 < 4.5 for trailing_n 9."""
    con = duckdb.connect(str(tmp_path / "z.duckdb"))
    create_schema(con)
    day = datetime(2024, 5, 1, tzinfo=timezone.utc)
    for h in range(earlier + 1):  # one item an hour at h:30, steady then a plunge in the last hour
        con.execute("INSERT INTO items (id, ts, source, text, text_key, novelty_n, label, score, prob_negative, "
                    "prob_neutral, prob_positive, confidence, relevance, model, ingested_at) VALUES "
                    "(?, ?, 'news', 't', ?, 0, 'neutral', ?, 0, 1, 0, 1, 0, 'm', now())",
                    [f"z{h}", day + timedelta(hours=h, minutes=30), f"z{h}", 0.5 if h < earlier else -1.0])
        con.execute("INSERT INTO item_tickers VALUES (?, 'ZZ', 'field')", [f"z{h}"])
    install_trend_sql(con)
    last = day + timedelta(hours=earlier + 1)
    series = rows(con, "SELECT ts FROM sentiment_series(['ZZ'], ?, ?, 3600, 3600)", [day + timedelta(hours=1), last])
    assert len(series) == earlier + 1  # the last point has `earlier` points before it in the window
    shocks = rows(con, "SELECT * FROM shocks(?, ?, 3600, 3600, trailing_n := ?, min_items := 1, "
                       "min_baseline_items := 0)", [day + timedelta(hours=1), last, trailing_n])
    assert [s["ts"] for s in shocks] == ([last] if flagged else [])
    con.close()
