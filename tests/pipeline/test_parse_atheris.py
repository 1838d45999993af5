"""A bounded coverage-guided fuzzing run of parse_record (atheris) in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is part of the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [
    b'{"id": "n1", "text": "$AAPL beats", "published_at": "2024-05-01T09:30:00-04:00", "source": "news", '
    b'"tickers": ["aapl", "$msft"], "url": "http://x", "author": "a", "lang": "en"}',
    b'{"text": "x", "published_at": 1714550400000}',
    b'{"text": "x", "published_at": "1714550400000", "tickers": []}',
    b'{"text": "\\ud800", "id": 12}',
]


@pytest.mark.slow
def test_atheris_finds_no_exception_escaping_parse_record(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, seed in enumerate(SEEDS):
        (corpus / f"seed{n}").write_bytes(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "tests/pipeline/atheris_parse.py"), "-runs=100000", "-seed=1",
                          "-max_len=2048", "-rss_limit_mb=2048", str(corpus)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 100000 runs" in run.stderr
