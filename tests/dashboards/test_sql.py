"""The trend macros on a known database: series, volume, sources, movers, shocks, why."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from dashboards.sql import install_trend_sql, trend_series


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
    shocks = rows(con, "SELECT * FROM shocks(?, ?, 900, 3600)", [START, END])
    assert shocks and {s["ticker"] for s in shocks} == {"AAPL"}
    assert all(TURN <= s["ts"] <= TURN + timedelta(hours=1) for s in shocks)  # the first bad item is at TURN
    assert all(s["z"] < -3 for s in shocks)
    stricter = rows(con, "SELECT * FROM shocks(?, ?, 900, 3600, k := 10)", [START, END])
    assert len(stricter) < len(shocks)


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
    from connectors.duckdb.schema import create_schema

    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    create_schema(con)
    install_trend_sql(con)
    now = datetime.now(timezone.utc)
    assert rows(con, "SELECT * FROM movers(?, 3600, 3600)", [now]) == []
    assert rows(con, "SELECT * FROM why('AAPL', ?, 3600)", [now]) == []
    series = rows(con, "SELECT * FROM trend('AAPL', ?, ?, 3600, 3600)", [now - timedelta(hours=2), now])
    assert all(r["n_items"] == 0 and r["sentiment"] is None for r in series)
