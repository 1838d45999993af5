"""Recall and precision of ticker linking on the hand-written headlines (tests/pipeline/company_headlines.csv).

Recall: the share of gold tickers of `company` rows that were linked. Precision: the share of
links on `company` rows that are gold. False-link rate: the share of `none` rows (no listed
company named, ordinary words such as "apple pie") that link anything. Cashtag-free rows, so
this measures name linking alone.

    python bench/eval_linking.py [--errors]
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINES = ROOT / "tests/pipeline/company_headlines.csv"


@dataclass
class Figures:
    gold: int = 0
    found: int = 0
    linked: int = 0
    correct: int = 0
    none_rows: int = 0
    none_linked: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.gold

    @property
    def precision(self) -> float:
        return self.correct / self.linked

    @property
    def false_link_rate(self) -> float:
        return self.none_linked / self.none_rows


def headlines() -> list[dict]:
    with HEADLINES.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def evaluate(extractor, rows: list[dict]) -> Figures:
    figures = Figures()
    for row in rows:
        gold = set(row["tickers"].split())
        linked = {ticker for ticker, _ in extractor.extract(row["text"])}
        if row["kind"] == "none":
            figures.none_rows += 1
            figures.none_linked += bool(linked)
        else:
            figures.gold += len(gold)
            figures.found += len(gold & linked)
            figures.linked += len(linked)
            figures.correct += len(gold & linked)
        if linked != gold:
            figures.errors.append(f"{row['text']!r}: gold {sorted(gold)}, linked {sorted(linked)}")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--errors", action="store_true", help="list every row linked differently from its gold")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.tickers import Linking

    rows = headlines()
    figures = evaluate(Linking(aliases={}).extractor(), rows)
    print(f"rows: {len(rows)} ({len(rows) - figures.none_rows} naming companies, {figures.none_rows} none)")
    print(f"recall {figures.recall:.3f} ({figures.found}/{figures.gold}); "
          f"precision {figures.precision:.3f} ({figures.correct}/{figures.linked}); "
          f"company-free rows linked {figures.none_linked}/{figures.none_rows} = {figures.false_link_rate:.3f}")
    if args.errors:
        print("\n".join(figures.errors))


if __name__ == "__main__":
    main()
