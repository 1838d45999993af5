"""``query``, ``trend`` and ``dashboard`` through the real CLI entry point."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from pipeline.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_addresses(port: int) -> list[str]:
    """IPv4 addresses with a listening TCP socket on ``port``, from /proc/net/tcp."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_query_prints_an_aligned_table(trend_db, capsys):
    assert main(["query", "--db", trend_db, "SELECT ticker, count(*) AS n FROM item_tickers GROUP BY 1 ORDER BY 1"]) == 0
    assert capsys.readouterr().out == "ticker  n\n------  --\nAAPL    73\nMSFT    72\nTSLA    6\n(3 rows)\n"


def test_query_csv_and_json(trend_db, capsys):
    sql = "SELECT stage, reason, n FROM dead_letter_summary()"
    assert main(["query", "--db", trend_db, sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "stage,reason,n\nparse,broken JSON,1\nparse,missing text,1\n"
    assert main(["query", "--db", trend_db, "SELECT * FROM why('AAPL', TIMESTAMPTZ '2024-03-04 18:00:00+00', 3600, 2)",
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["ts"] == "2024-03-04T17:59:00+00:00"


VALUES_SQL = ("SELECT TIMESTAMPTZ '2024-05-01 11:00:00.9+00' AS ts, -0.6195420905620397::DOUBLE AS s, "
              "1.23456789e-5::DOUBLE AS tiny, TIMESTAMPTZ '2024-05-01 11:00:00.3+00' AS ts2, "
              "TIMESTAMPTZ '2024-05-01 11:00:00+00' AS whole")


def test_query_csv_and_json_print_values_as_stored(trend_db, capsys):
    """docs/sql.md: csv and json print values as stored: full float precision, times with their
    fraction and zone (ISO-8601)."""
    stored = ["2024-05-01T11:00:00.900000+00:00", -0.6195420905620397, 1.23456789e-05,
              "2024-05-01T11:00:00.300000+00:00", "2024-05-01T11:00:00+00:00"]
    assert main(["query", "--db", trend_db, VALUES_SQL, "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    cells = row.split(",")
    assert cells[0] == stored[0] and cells[3:] == stored[3:]
    assert float(cells[1]) == stored[1] and float(cells[2]) == stored[2]  # round-trips exactly
    assert main(["query", "--db", trend_db, VALUES_SQL, "--format", "json"]) == 0
    assert list(json.loads(capsys.readouterr().out)[0].values()) == stored
    sql = "SELECT ts, sentiment, ess FROM ticker_sentiment ORDER BY ALL LIMIT 20"
    assert main(["query", "--db", trend_db, sql, "--format", "csv"]) == 0
    import duckdb
    con = duckdb.connect(trend_db, read_only=True)
    try:
        expected = con.execute(sql).fetchall()
    finally:
        con.close()
    printed = [line.split(",") for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(datetime.fromisoformat(t), float(s), float(e)) for t, s, e in printed] == expected


def test_query_table_rounds_but_never_prints_different_times_alike(trend_db, capsys):
    assert main(["query", "--db", trend_db, VALUES_SQL]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row == ["2024-05-01", "11:00:00.900000", "-0.6195", "0.0000", "2024-05-01", "11:00:00.300000",
                   "2024-05-01", "11:00:00"]


def test_query_refuses_bad_sql_writes_and_missing_files_with_exit_2(trend_db, tmp_path, capsys):
    assert main(["query", "--db", trend_db, "SELEC 1"]) == 2
    assert capsys.readouterr().err.startswith("tickerpulse query: error: SQL failed: Parser Error")
    assert main(["query", "--db", trend_db, "DELETE FROM items"]) == 2  # readers never write
    assert "read-only" in capsys.readouterr().err
    assert main(["query", "--db", str(tmp_path / "none.duckdb"), "SELECT 1"]) == 2
    assert "no such database" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a database\n")
    for db in (str(tmp_path / "notes.txt"), ":memory:", ""):
        assert main(["query", "--db", db, "SELECT 1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"tickerpulse query: error: --db {db!r}: ") and "\n" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["query", "--db", trend_db, "SELECT 1", "--format", "xml"])
    assert exit_.value.code == 2


def test_trend_prints_the_tickers_series(trend_db, capsys):
    assert main(["trend", "--db", trend_db, "--ticker", "$aapl", "--since", "4h", "--bucket", "1h",
                 "--half-life", "30m", "--until", "2024-03-04T18:00:00"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["bucket", "as_of", "n_items", "n_positive", "n_neutral"]
    assert [line.split()[1] for line in lines[2:6]] == ["14:00:00", "15:00:00", "16:00:00", "17:00:00"]
    assert lines[-1] == "(4 rows)"
    assert all(float(line.split()[-4]) < -0.7 for line in lines[2:6])  # sentiment: AAPL turned bad


def test_trend_resolves_a_companys_other_symbols_as_ingestion_does(trend_db, capsys):
    """An item given as APC.F (Apple in Frankfurt) is stored under AAPL; so trend --ticker APC.F is AAPL's."""
    args = ["--since", "4h", "--bucket", "1h", "--half-life", "30m", "--until", "2024-03-04T18:00:00"]
    assert main(["trend", "--db", trend_db, "--ticker", "AAPL", *args]) == 0
    aapl = capsys.readouterr().out
    assert main(["trend", "--db", trend_db, "--ticker", "apc.f", *args]) == 0
    assert capsys.readouterr().out == aapl and "(4 rows)" in aapl
    assert main(["trend", "--db", trend_db, "--ticker", "GOOG"]) == 2
    assert "no items for ticker GOOG (stored as GOOGL)" in capsys.readouterr().err


def test_trend_explains_an_empty_window_and_refuses_bad_arguments(trend_db, capsys):
    assert main(["trend", "--db", trend_db, "--ticker", "AAPL", "--since", "1h", "--bucket", "15m"]) == 0
    assert "try --until latest" in capsys.readouterr().err  # the data is from 2024, the window is now
    assert main(["trend", "--db", trend_db, "--ticker", "NOPE"]) == 2
    assert "no items for ticker NOPE" in capsys.readouterr().err
    assert main(["trend", "--db", trend_db, "--ticker", "AAPL", "--until", "yesterday"]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["trend", "--db", trend_db, "--ticker", "AAPL", "--bucket", "-5m"])
    assert exit_.value.code == 2


def test_dashboard_binds_localhost_and_serves_only_local_assets(trend_db, tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "run_pipeline.py", "dashboard", "--db", trend_db, "--port", str(port)],
                              cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr.readline().strip() == f"TickerPulse dashboard on http://127.0.0.1:{port}/ (Ctrl-C to stop)"
        page = None
        for _ in range(100):
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert page and "<title>TickerPulse</title>" in page
        sources = re.findall(r'<script src="([^"]+)"', page) + re.findall(r'<link[^>]+href="([^"]+)"', page)
        assert sources and all(src.startswith("/") for src in sources)  # nothing from a CDN
        assert listening_addresses(port) == ["127.0.0.1"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_dashboard_refuses_a_missing_database(tmp_path, capsys):
    assert main(["dashboard", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert "no such database" in capsys.readouterr().err
