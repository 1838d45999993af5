"""``query`` as an attacker would use it: one read-only statement, no file system, no other database."""
from __future__ import annotations

import shutil
import subprocess
import sys

import duckdb
import pytest

from pipeline.cli import main


def refusal(argv: list[str], capsys) -> str:
    assert main(["query", *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def victim(tmp_path) -> str:
    path = str(tmp_path / "other.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE TABLE precious AS SELECT 1 AS x")
    con.close()
    return path


@pytest.mark.parametrize("sql, target", [
    ("COPY (SELECT * FROM items) TO '{dir}/stolen.csv'", "stolen.csv"),
    ("COPY items TO '{dir}/stolen.parquet' (FORMAT parquet)", "stolen.parquet"),
    ("EXPORT DATABASE '{dir}/export'", "export"),
])
def test_no_writes_to_the_file_system(trend_db, tmp_path, capsys, sql, target):
    err = refusal(["--db", trend_db, sql.format(dir=tmp_path)], capsys)
    assert "read-only" in err or "Permission Error" in err
    assert not (tmp_path / target).exists()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "FROM read_parquet('{parquet}')",
])
def test_no_reads_from_the_file_system(trend_db, tmp_path, capsys, sql):
    parquet = tmp_path / "secret.parquet"
    duckdb.execute(f"COPY (SELECT 'root:' AS s) TO '{parquet}' (FORMAT parquet)")
    err = refusal(["--db", trend_db, sql.format(parquet=parquet)], capsys)
    assert "root:" not in err and ("Permission Error" in err or "Table with name /etc/passwd does not exist" in err)


def test_no_other_database_can_be_attached_or_changed(trend_db, victim, capsys):
    assert "ATTACH statements are refused" in refusal(["--db", trend_db, f"ATTACH '{victim}' AS other (READ_WRITE)"], capsys)
    err = refusal(["--db", trend_db, f"ATTACH '{victim}' AS other (READ_WRITE); DELETE FROM other.precious"], capsys)
    assert "one SQL statement at a time, not 2" in err
    con = duckdb.connect(victim, read_only=True)
    assert con.execute("SELECT count(*) FROM precious").fetchone() == (1,)
    con.close()


@pytest.mark.parametrize("sql, reason", [
    ("SELECT 1; SELECT 2", "one SQL statement at a time, not 2"),
    ("SELECT 1;;SELECT 2;", "one SQL statement at a time, not 2"),
    ("", "one SQL statement at a time, not 0"),
    ("DELETE FROM items", "read-only: DELETE statements are refused"),
    ("CREATE TEMP TABLE t AS SELECT 1", "read-only: CREATE statements are refused"),
    ("SET enable_external_access = true", "read-only: SET statements are refused"),
    ("RESET lock_configuration", "read-only: SET statements are refused"),
    ("INSTALL httpfs", "read-only: LOAD statements are refused"),
    ("LOAD httpfs", "read-only: LOAD statements are refused"),
    ("DETACH memory", "read-only: DETACH statements are refused"),
])
def test_only_one_read_only_statement_runs(trend_db, capsys, sql, reason):
    assert reason in refusal(["--db", trend_db, sql], capsys)


def test_settings_stay_locked_even_through_a_table_function(trend_db, capsys):
    """The sandbox is on, and SET in PRAGMA form is refused like SET."""
    assert main(["query", "--db", trend_db, "SELECT current_setting('enable_external_access') AS e, "
                 "current_setting('lock_configuration') AS l", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "e,l\nFalse,True\n"
    assert "read-only: SET statements are refused" in refusal(
        ["--db", trend_db, "PRAGMA enable_external_access = true"], capsys)


def test_the_macros_and_ordinary_queries_still_work(trend_db, capsys):
    for sql in ("WITH n AS (SELECT count(*) c FROM items) SELECT c > 0 FROM n", "FROM dead_letter_summary()",
                "SELECT count(*) > 0 FROM movers(TIMESTAMPTZ '2024-03-04 18:00:00+00', 3600, 3600)",
                "DESCRIBE items", "EXPLAIN SELECT 1", "PRAGMA show_tables"):
        assert main(["query", "--db", trend_db, sql]) == 0, sql
    capsys.readouterr()
    assert main(["trend", "--db", trend_db, "--ticker", "AAPL", "--until", "2024-03-04T18:00:00",
                 "--since", "2h", "--bucket", "1h"]) == 0
    assert "(2 rows)" in capsys.readouterr().out


def test_a_snapshot_is_sandboxed_too(tmp_path, trend_db, capsys):
    """While a writer (another process) holds the file, query reads the snapshot: same macros, same lock."""
    db = str(tmp_path / "live.duckdb")
    shutil.copy(trend_db, db)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "published"
        assert main(["query", "--db", db, "SELECT count(*) > 0 AS ok FROM dead_letter_summary()", "--format", "csv"]) == 0
        captured = capsys.readouterr()
        assert captured.out == "ok\nTrue\n" and "reading snapshot" in captured.err
        assert main(["query", "--db", db, "SELECT * FROM read_text('/etc/hostname')"]) == 2
        assert "Permission Error" in capsys.readouterr().err.splitlines()[-1]
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)


WRITER = """
import sys, duckdb
from connectors.duckdb.snapshot import publish_snapshot
con = duckdb.connect(sys.argv[1])
publish_snapshot(con, sys.argv[1])
print("published", flush=True)
sys.stdin.read()
"""


def test_table_output_escapes_control_characters(trend_db, capsys):
    sql = "SELECT chr(27) || '[2Jwiped' || chr(13) || 'x' || chr(10) || chr(7) || chr(8238) AS t"
    assert main(["query", "--db", trend_db, sql]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2Jwiped\\rx\\n\\x07\\u202e" in out
    assert main(["query", "--db", trend_db, "SELECT 1 AS \"\x1b]0;title\x07\""]) == 0
    assert "\\x1b]0;title\\x07" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--ticker", "A\nB"], "--ticker: not a ticker symbol: 'A\\nB'"),
    (["--ticker", "AAPL", "--since", "999999999d", "--bucket", "999999d"], "--since: at most 36500 days"),
    (["--ticker", "AAPL", "--until", "\x1b[2J" * 40], "--until: not a time: '\\x1b[2J"),
])
def test_trend_refuses_bad_inputs_in_one_line(trend_db, capsys, argv, message):
    assert main(["trend", "--db", trend_db, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "\x1b" not in err
