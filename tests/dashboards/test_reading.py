"""The dashboard's cache of reads: served while the file is unchanged, re-read as soon as it changes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

from dashboards.app import create_app
from dashboards.reading import FileCache, Unreadable, file_identity

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(trend_db, tmp_path) -> str:
    path = str(tmp_path / "pulse.duckdb")
    shutil.copy(trend_db, path)
    return path


def count_items(reader) -> int:
    return reader.con.execute("SELECT count(*) FROM items").fetchall()[0][0]


def add_items(db: str, n: int, ticker: str = "NVDA") -> None:
    """n more items (copies of MSFT's, one minute later) linked to ``ticker``, written and closed."""
    with duckdb.connect(db) as con:
        con.execute(f"INSERT INTO items SELECT '{ticker}-' || id, ts + INTERVAL 1 MINUTE, source, text, url, author,"
                    " lang, text_key, novelty_n, label, score, prob_negative, prob_neutral, prob_positive,"
                    " confidence, relevance, model, ingested_at, NULL, NULL, NULL FROM items"
                    f" WHERE id LIKE 'MSFT-%' ORDER BY id LIMIT {n}")
        con.execute(f"INSERT INTO item_tickers SELECT id, '{ticker}', 'cashtag' FROM items WHERE id LIKE '{ticker}-%'")


def test_an_unchanged_file_is_read_once(db):
    cache = FileCache(db)
    calls = []

    def compute(reader) -> int:
        calls.append(1)
        return count_items(reader)
    for _ in range(3):
        with cache.read() as read:
            assert read.cached("n", (), compute) == 151
    assert len(calls) == 1 and cache.opens == 1
    with cache.read() as read:  # other arguments: computed, on one open for the whole read
        assert read.cached("n", ("other",), compute) == read.cached("n", ("third",), compute) == 151
    assert len(calls) == 3 and cache.opens == 2


def test_new_items_invalidate_the_cache(db):
    cache = FileCache(db)
    with cache.read() as read:
        assert read.cached("n", (), count_items) == 151
    before = file_identity(db)
    add_items(db, 10)
    assert file_identity(db) != before
    with cache.read() as read:
        assert read.cached("n", (), count_items) == 161
    assert cache.opens == 2


def test_the_file_is_released_between_reads(db):
    """Attached for a read and detached after it: a writer in another process can open the file."""
    cache = FileCache(db)
    with cache.read() as read:
        read.cached("n", (), count_items)
    done = subprocess.run([sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", db],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_missing_file_is_unreadable_and_not_cached(db):
    cache = FileCache(db)
    with cache.read() as read:
        read.cached("n", (), count_items)
    os.rename(db, db + ".away")
    with pytest.raises(Unreadable, match="no such database"), cache.read() as read:
        read.cached("n", (), count_items)
    os.rename(db + ".away", db)
    with cache.read() as read:
        assert read.cached("n", (), count_items) == 151


def test_the_cache_is_bounded_least_recently_used_first(db):
    cache = FileCache(db, max_entries=2, max_bytes=1000)
    with cache.read() as read:
        for key in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
            read.cached(key, (), lambda _, key=key: key)
        assert len(cache) == 2
        assert read.cached("a", (), lambda _: "recomputed") == "a"
        assert read.cached("b", (), lambda _: "recomputed") == "recomputed"
        read.cached("big", (), lambda _: np.zeros(200))  # 1,600 bytes: returned, not kept
        assert read.cached("big", (), lambda _: "recomputed") == "recomputed"
        read.cached("x", (), lambda _: np.zeros(100))
        read.cached("y", (), lambda _: np.zeros(100))  # 1,600 bytes together: "x" dropped
        assert read.cached("x", (), lambda _: "recomputed") == "recomputed"


WRITER = """
import sys, duckdb
from connectors.duckdb.snapshot import publish_snapshot
con = duckdb.connect(sys.argv[1])
for line in sys.stdin:  # each line: one more item, then a new snapshot
    n = int(line)
    con.execute("INSERT INTO items SELECT 'NEW-' || ?::VARCHAR, ts, source, text, url, author, lang, text_key,"
                " novelty_n, label, score, prob_negative, prob_neutral, prob_positive, confidence, relevance,"
                " model, ingested_at, NULL, NULL, NULL FROM items WHERE id = 'MSFT-000'", [n])
    publish_snapshot(con, sys.argv[1])
    print("published", flush=True)
"""


def test_a_new_snapshot_invalidates_the_cache_while_a_writer_holds_the_file(db):
    cache = FileCache(db)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, db], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        for n in (1, 2):
            writer.stdin.write(f"{n}\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "published"
            with cache.read() as read:
                assert read.cached("n", (), count_items) == 151 + n
                assert read.origin()[0]  # read from the snapshot
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)


def refresh(client, deps: dict, search: str = "") -> dict:
    """The refresh callback's outputs, by component id."""
    callback = deps["ticker.options"]
    outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in callback["output"].strip(".").split("...")]
    body = {"output": callback["output"], "outputs": outputs,
            "inputs": [{**i, "value": v} for i, v in zip(callback["inputs"], [1, search])], "state": [],
            "changedPropIds": ["refresh.n_intervals"]}
    response = client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    return json.loads(response.get_data())["response"]


def status(panels: dict) -> str:
    return panels["status"]["children"][0]["props"]["children"]


def test_the_next_refresh_shows_new_items(db):
    """Through the app's own callback: repeated refreshes are served from its cache, a write is seen."""
    cache = FileCache(db)
    client = create_app(db, refresh_s=3600, cache=cache).server.test_client()
    deps = {d["output"].strip(".").split("...")[0].split("@")[0]: d
            for d in json.loads(client.get("/_dash-dependencies").get_data())}
    first = refresh(client, deps, "?ticker=MSFT")
    opens = cache.opens
    assert status(first).startswith("151 items · 3 tickers") and refresh(client, deps, "?ticker=MSFT") == first
    assert cache.opens == opens  # nothing opened for the second refresh
    add_items(db, 20)
    after = refresh(client, deps, "?ticker=MSFT")
    assert status(after).startswith("171 items · 4 tickers") and cache.opens == opens + 1
    assert "NVDA" in [option["value"] for option in after["ticker"]["options"]]
    assert refresh(client, deps, "?ticker=NVDA")["chart-title"]["children"][0] == "NVDA"  # from the new rows
