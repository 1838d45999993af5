"""The one-command demo, end to end: embedded broker, shipped corpus, streaming job, summary."""
from __future__ import annotations

import json
import socket

import duckdb

from connectors.duckdb.sentiment_macro import install_sentiment_macro
from pipeline import demo


def test_shipped_corpus_is_big_varied_and_has_bad_records():
    lines = demo.corpus_lines("news.jsonl") + demo.corpus_lines("comments.jsonl")
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pass
    items = [r for r in parsed if isinstance(r, dict) and isinstance(r.get("text"), str)]
    assert len({r["id"] for r in items}) >= 500
    assert len({t for r in items for t in r["text"].split() if t.startswith("$")}) >= 10
    assert len(lines) > len(parsed)  # some lines are not JSON at all
    assert len(items) > len({r["id"] for r in items})  # re-sent ids
    assert sum(len(line) for line in lines) < 300_000


def test_demo_streams_the_corpus_and_prints_the_summary(tmp_path, capsys):
    db = tmp_path / "demo.duckdb"
    assert demo.run(["--db", str(db), "--until-idle", "3s"]) == 0
    out = capsys.readouterr().out

    port = int(out.split("broker on 127.0.0.1:")[1].split()[0])
    with socket.socket() as sock:  # the broker is stopped
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        items, dead = con.execute("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM dead_letters)").fetchone()
        ba_now, ba_before = con.execute("""
            SELECT last(sentiment ORDER BY ts), first(sentiment ORDER BY ts) FILTER (WHERE ts <= '2024-05-06 16:30Z')
            FROM ticker_sentiment WHERE ticker = 'BA' AND half_life_s = 3600""").fetchone()
        tickers = [r[0] for r in con.execute("SELECT DISTINCT ticker FROM ticker_sentiment").fetchall()]
        table = out.split("Latest sentiment per ticker")[1]
        install_sentiment_macro(con)
        for line in table.splitlines()[2:2 + len(tickers)]:  # the summary equals the macro's truth
            ticker, day, hhmm, weighted, _mean, n_items = line.split()[:6]
            sentiment, n = con.execute("SELECT sentiment, n_items FROM sentiment_asof(?, ?::TIMESTAMPTZ, 3600)",
                                       [ticker, f"{day} {hhmm}:00+00"]).fetchone()
            assert int(n_items) == n and abs(float(weighted) - sentiment) <= 0.005 + 1e-9, (line, sentiment, n)
    finally:
        con.close()
    assert items == 626 and dead == 6
    assert ba_before > 0.2 and ba_now < -0.2  # BA's news turned from good to bad
    assert f"Caught up: {items} items, {dead} dead letters" in out
    assert all(f"\n{ticker} " in table for ticker in tickers) and len(tickers) == 12
    assert "BA " in table and "<- turned down" in table.split("\nBA ")[1].splitlines()[0]
    assert f"query --db {db}" in out and f"dashboard --db {db}" in out


def _points_db(path, points, half_life_s=3600.0) -> str:
    """A DuckDB file holding only the given ticker_sentiment points (ticker, ts, sentiment)."""
    from connectors.duckdb.schema import create_schema
    con = duckdb.connect(str(path))
    try:
        create_schema(con)
        for ticker, ts, sentiment in points:
            con.execute("INSERT INTO ticker_sentiment VALUES (?, ?::TIMESTAMPTZ, ?, ?, 1, 1.0, ?, [])",
                        [ticker, ts, half_life_s, sentiment, sentiment])
    finally:
        con.close()
    return str(path)


def test_summary_as_of_is_utc_whatever_the_process_time_zone(tmp_path, monkeypatch):
    import time
    db = _points_db(tmp_path / "p.duckdb", [("NVDA", "2024-05-06 20:00+00", 0.5)])
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        rows = demo.latest_sentiment(db, 3600.0)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert rows[0][:2] == ("NVDA", "2024-05-06 20:00")  # the header says "as of (UTC)"


def test_2h_change_is_against_the_value_2h_earlier_and_blank_without_one(tmp_path):
    db = _points_db(tmp_path / "p.duckdb", [
        ("FOOX", "2024-05-04 09:55+00", 0.92),  # before a gap longer than the horizon
        ("FOOX", "2024-05-05 10:00+00", -0.94),  # nothing at 08:00: no value 2h earlier
        ("BARX", "2024-05-05 07:55+00", 0.9),
        ("BARX", "2024-05-05 08:00+00", 0.5),  # the value as of t - 2h
        ("BARX", "2024-05-05 08:05+00", 0.1),
        ("BARX", "2024-05-05 10:00+00", -0.3),
    ])
    rows = {r[0]: r for r in demo.latest_sentiment(db, 3600.0)}
    assert rows["FOOX"][5] is None
    assert abs(rows["BARX"][5] - (-0.3 - 0.5)) < 1e-12
    table = demo.render(list(rows.values()), 3600.0)
    foox = next(line for line in table.splitlines() if line.startswith("FOOX"))
    assert foox.rstrip().endswith("1") and "turned down" not in foox  # blank change, no flag
