"""Databases for the dashboard tests: a known one (schema module + Arrow inserts) and a real backfill.

AAPL turns from good news to bad at 12:00; MSFT stays mildly positive; TSLA is quiet. One item
text carries HTML, to check that every view escapes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from connectors.duckdb.schema import create_schema
from models.aggregation_config import relevance

REPO_ROOT = Path(__file__).resolve().parents[2]
START = datetime(2024, 3, 4, 6, 0, tzinfo=timezone.utc)
TURN = datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc)
END = datetime(2024, 3, 4, 18, 0, tzinfo=timezone.utc)
HOSTILE_TEXT = "<script>window.pwned = 1</script><b>AAPL</b> & co"


def _item(n: int, ticker: str, ts: datetime, score: float, source: str = "news", text: str | None = None) -> dict:
    label = "positive" if score > 0.3 else "negative" if score < -0.3 else "neutral"
    confidence = 0.6 + 0.4 * abs(score)
    text = text or f"{ticker} headline {n}: {label} news"
    return {
        "id": f"{ticker}-{n:03d}", "ts": ts, "source": source, "text": text,
        "url": f"https://example.com/{ticker}/{n}", "author": None, "lang": "en",
        "text_key": hashlib.sha256(text.encode()).hexdigest(), "novelty_n": 0, "label": label,
        "score": score, "prob_negative": max(0.0, -score), "prob_neutral": 1 - abs(score),
        "prob_positive": max(0.0, score), "confidence": confidence,
        "relevance": relevance(confidence, source, 0), "model": "fixture",
        "ingested_at": ts, "kafka_topic": None, "kafka_partition": None, "kafka_offset": None,
    }


def fixture_items() -> list[dict]:
    rows = []
    for n in range(72):  # every 10 minutes, 06:00 to 17:50
        ts = START + timedelta(minutes=10 * n)
        aapl = 0.8 if ts < TURN else -0.8
        rows.append(_item(n, "AAPL", ts, aapl + (0.1 if n % 2 else -0.1), "news" if n % 3 else "comment"))
        rows.append(_item(n, "MSFT", ts + timedelta(minutes=5), 0.4 if n % 2 else 0.2))
        if n % 12 == 0:
            rows.append(_item(n, "TSLA", ts, -0.2))
    rows.append(_item(999, "AAPL", END - timedelta(minutes=1), -0.9, "news", HOSTILE_TEXT))
    return rows


def build_trend_db(path: str) -> str:
    con = duckdb.connect(path)
    create_schema(con)
    items = pa.Table.from_pylist(fixture_items())
    con.register("incoming", items)
    con.execute("INSERT INTO items BY NAME SELECT * FROM incoming")
    con.execute("INSERT INTO item_tickers SELECT id, split_part(id, '-', 1), 'cashtag' FROM incoming")
    con.execute(
        "INSERT INTO dead_letters VALUES (?, ?, 'broken JSON', 'parse', 'in.jsonl:3', NULL, NULL, NULL, ?),"
        " (?, ?, 'missing text', 'parse', 'in.jsonl:9', NULL, NULL, NULL, ?)",
        ["d1", b"{not json", END, "d2", b'{"id": 1}', END],
    )
    con.close()
    return path


GOOD_NEWS = ["{n} beats earnings estimates and raises full-year guidance",
             "{n} shares jump after record quarterly revenue",
             "Analysts upgrade {n} to buy on strong iPhone demand"]
BAD_NEWS = ["{n} issues profit warning as sales slump",
            "{n} shares tumble after regulators open antitrust probe",
            "{n} cuts outlook, citing weak demand and rising costs"]
STEADY_NEWS = ["{n} to report quarterly results on Thursday", "{n} announces annual shareholder meeting date"]


def write_backfill_jsonl(path: str) -> str:
    """A small corpus for a real backfill: AAPL turns from good to bad news, MSFT is routine."""
    lines = []
    for n in range(24):  # every 15 minutes from 06:00
        ts = START + timedelta(minutes=15 * n)
        aapl = (GOOD_NEWS if ts < TURN - timedelta(hours=3) else BAD_NEWS)[n % 3]
        lines.append({"id": f"a{n}", "text": aapl.format(n="$AAPL"), "published_at": ts.isoformat(),
                      "source": "news", "url": f"https://example.com/a{n}"})
        lines.append({"id": f"m{n}", "text": STEADY_NEWS[n % 2].format(n="$MSFT") + f" ({n})",
                      "published_at": (ts + timedelta(minutes=5)).isoformat(), "source": "comment"})
    lines.append({"id": "x1", "text": HOSTILE_TEXT, "published_at": (START + timedelta(hours=6)).isoformat(),
                  "tickers": ["AAPL"]})
    with open(path, "w") as out:
        out.write("\n".join(json.dumps(line) for line in lines) + "\n{broken json\n")
    return path


@pytest.fixture(scope="session")
def backfill_db(tmp_path_factory) -> str:
    """A database built by the real backfill command (bundled model, Beam FnApiRunner)."""
    workdir = tmp_path_factory.mktemp("backfill")
    db = str(workdir / "pulse.duckdb")
    source = write_backfill_jsonl(str(workdir / "news.jsonl"))
    done = subprocess.run([sys.executable, "run_pipeline.py", "backfill", "--input", source, "--db", db],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return db


@pytest.fixture(scope="session")
def times() -> tuple[datetime, datetime, datetime]:
    """START, TURN (AAPL's news turns bad) and END of the trend database."""
    return START, TURN, END


@pytest.fixture(scope="session")
def trend_db(tmp_path_factory) -> str:
    return build_trend_db(str(tmp_path_factory.mktemp("trend") / "pulse.duckdb"))


HOSTILE_RAW = b"\x1b]0;owned\x07<img src=x onerror=window.pwned=1>\r\x00\xff\xfe broken"


@pytest.fixture
def dead_letter_db(tmp_path) -> tuple[str, bytes]:
    """The trend database with one more dead letter (terminal escapes, markup, NUL, non-UTF-8), and its bytes."""
    path = build_trend_db(str(tmp_path / "dead.duckdb"))
    with duckdb.connect(path) as con:
        con.execute("INSERT INTO dead_letters VALUES ('d3', ?, 'not UTF-8', 'parse', 'in.jsonl:12', NULL, NULL, NULL, ?)",
                    [HOSTILE_RAW, END + timedelta(minutes=1)])
    return path, HOSTILE_RAW


@pytest.fixture
def empty_db(tmp_path) -> str:
    """A database with the schema and nothing in it, as a fresh backfill target."""
    path = str(tmp_path / "empty.duckdb")
    with duckdb.connect(path) as con:
        create_schema(con)
    return path
