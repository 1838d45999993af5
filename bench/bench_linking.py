"""Ticker linking throughput on one core, beside a loop of regexes and the scoring rate, one run.

The linker is the pipeline's (``Linking(aliases={}).extractor()``: the default table of ~1,800
companies, cashtags, symbol resolution). The baseline is what one writes first: one compiled
word-boundary regex per company name, tried in turn. Both get the same headlines: the hand-written
evaluation set (tests/pipeline/company_headlines.csv) and the tweet validation texts. The engine's
scoring rate on the same texts shows what share of a pipeline's time linking costs.

    python bench/bench_linking.py [--repeat 5] [--score-texts 512]
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.companies import Dictionary, default_companies  # noqa: E402
from pipeline.tickers import Linking  # noqa: E402

HEADLINES = ROOT / "tests/pipeline/company_headlines.csv"
TWEETS = ROOT / "../shared/data/twitter_financial_news_sentiment/sent_valid.csv"


def texts() -> list[str]:
    with HEADLINES.open(newline="", encoding="utf-8") as handle:
        out = [row["text"] for row in csv.DictReader(handle)]
    if TWEETS.exists():
        with TWEETS.open(newline="", encoding="utf-8") as handle:
            out += [row["text"] for row in csv.DictReader(handle)]
    return out


def rate(fn, items: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for text in items:
            fn(text)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--score-texts", type=int, default=512, help="texts for the scoring rate (0: skip)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the goal states

    items = texts()
    started = time.perf_counter()
    extractor = Linking(aliases={}).extractor()
    build_s = time.perf_counter() - started
    linked = rate(lambda text: extractor.extract(text), items, args.repeat)

    table_names = sorted({name for name, _, _ in default_companies(Dictionary.load()).names()}, key=len, reverse=True)
    patterns = [re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)") for name in table_names]
    regex_loop = rate(lambda text: [p.search(text) for p in patterns], items[:300], 1)

    print(f"texts: {len(items)}; company names: {len(table_names)}; linker built in {build_s:.2f} s")
    print(f"linker (Aho-Corasick + rules): {linked:,.0f} texts/s on one core")
    print(f"regex loop, one pattern per name: {regex_loop:,.0f} texts/s on one core")
    print(f"ratio linker / regex loop: {linked / regex_loop:.0f}x")
    if args.score_texts:
        import torch

        from models.engine import SentimentEngine

        torch.set_num_threads(1)
        engine = SentimentEngine.load(device="cpu")
        sample = list(dict.fromkeys(items))[: args.score_texts]
        engine.predict(sample[:64])
        started = time.perf_counter()
        for start in range(0, len(sample), 64):
            engine.predict(sample[start: start + 64])
        scored = len(sample) / (time.perf_counter() - started)
        print(f"scoring (engine default, one thread): {scored:,.0f} texts/s; "
              f"linking costs {100 * scored / linked:.1f}% of the scoring time")


if __name__ == "__main__":
    main()
