"""The real command line in a subprocess: what a user sees on stderr."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_backfill_shows_progress_lines_and_no_beam_import_notice(tmp_path):
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"$AAPL item {i}", "published_at": 1714550400000 + i})
                              + "\n" for i in range(40)))
    run = subprocess.run([sys.executable, "run_pipeline.py", "backfill", "--input", str(corpus),
                          "--db", str(tmp_path / "x.duckdb"), "--progress-interval", "1ms"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "tickerpulse.progress: read: " in run.stderr and "tickerpulse.progress: scored: " in run.stderr
    assert "apitools" not in run.stderr
    assert "read 40, scored 40" in run.stdout


def test_the_log_level_takes_any_case_and_a_bad_one_is_one_line(tmp_path, monkeypatch, capsys):
    import logging

    from pipeline.cli import main

    monkeypatch.setenv("TICKERPULSE_LOG_LEVEL", "debug")
    before = logging.getLogger("pipeline").level
    try:
        assert main(["query", "--db", str(tmp_path / "none.duckdb"), "SELECT 1"]) == 2  # past the logging set-up
        assert logging.getLogger("pipeline").level == logging.DEBUG
    finally:
        for package in ("pipeline", "models", "connectors", "dashboards", "tickerpulse", "__main__"):
            logging.getLogger(package).setLevel(before)
    capsys.readouterr()
    monkeypatch.setenv("TICKERPULSE_LOG_LEVEL", "bogus")
    assert main(["query", "--db", str(tmp_path / "none.duckdb"), "SELECT 1"]) == 2
    assert capsys.readouterr().err == ("tickerpulse: error: TICKERPULSE_LOG_LEVEL='bogus': "
                                       "use one of DEBUG, INFO, WARNING, ERROR, CRITICAL\n")
