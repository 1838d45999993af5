"""Name linking on the hand-written headlines (tests/pipeline/company_headlines.md): the bars
of docs/companies.md kept as a regression test."""
from __future__ import annotations

from bench.eval_linking import evaluate, headlines
from pipeline.tickers import Linking


def test_recall_precision_and_false_links_on_the_hand_written_headlines():
    rows = headlines()
    assert sum(row["kind"] == "company" for row in rows) >= 300 and sum(row["kind"] == "none" for row in rows) >= 100
    figures = evaluate(Linking(aliases={}).extractor(), rows)
    report = "\n".join(figures.errors)
    assert figures.recall >= 0.95, report
    assert figures.precision >= 0.98, report
    assert figures.false_link_rate <= 1 / 30, report
