"""Backfill end to end vs scoring only, same items, same model, one run (issue 4; goal ratio >= 0.8).

    python bench/bench_backfill.py [--n 5000] [--data CSV] [--model PATH]

End to end = ``tickerpulse backfill`` of a JSONL file into a fresh DuckDB file: read, parse,
tickers, dedupe, novelty, RunInference scoring, relevance, aggregation, sink; it includes the
pipeline start and the model load. Scoring only = ``SentimentEngine.predict`` over the same texts
in the pipeline's batch size, with and without its model load.

Both wall time and this process's CPU time are reported: on a machine shared with other jobs
the wall-clock ratio swings with their load, CPU time much less (torch and the FnApiRunner's
in-memory worker run in this process).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.engine import SentimentEngine  # noqa: E402
from pipeline.backfill import run_backfill  # noqa: E402
from pipeline.scoring import DEFAULT_BATCH_SIZE  # noqa: E402

DEFAULT_DATA = "/work/shared/data/twitter_financial_news_sentiment/sent_train.csv"
T0_MS = 1714550400000


def texts(path: str, n: int) -> list[str]:
    """Distinct real headlines (the engine caches exact repeats, which would flatter both sides)."""
    with open(path, newline="", encoding="utf-8") as handle:
        found = list(dict.fromkeys(row["text"] for row in csv.DictReader(handle)))
    if len(found) < n:
        found = [f"{text} (#{i // len(found)})" for i, text in enumerate(found * (n // len(found) + 1))]
    return found[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    corpus = texts(args.data, args.n)

    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "bench.jsonl"
        with open(jsonl, "w", encoding="utf-8") as out:
            for i, text in enumerate(corpus):
                out.write(json.dumps({"id": f"b{i}", "text": text, "published_at": T0_MS + i * 30_000,
                                      "source": "news" if i % 3 else "comment"}) + "\n")
        argv = ["--input", str(jsonl), "--db", str(Path(tmp) / "bench.duckdb"), "--progress-interval", "1000s"]
        if args.model:
            argv += ["--model", args.model]
        cpu_started = time.process_time()
        summary = run_backfill(argv)
        end_to_end_cpu = time.process_time() - cpu_started
        end_to_end_s = summary.seconds

    started, cpu_started = time.perf_counter(), time.process_time()
    engine = SentimentEngine.load(args.model, "auto")
    loaded, cpu_loaded = time.perf_counter(), time.process_time()
    for start in range(0, len(corpus), DEFAULT_BATCH_SIZE):
        engine.predict(corpus[start:start + DEFAULT_BATCH_SIZE])
    scoring_s, scoring_cpu = time.perf_counter() - loaded, time.process_time() - cpu_loaded
    with_load_s, with_load_cpu = time.perf_counter() - started, time.process_time() - cpu_started

    n = len(corpus)
    print(f"items: {n}  model: {engine.name}  device: {engine.device}  batch: {DEFAULT_BATCH_SIZE}")
    print(f"backfill end to end     : {n / end_to_end_s:8.1f} items/s  ({end_to_end_s:.1f} s, incl. start-up and model load;"
          f" scored {summary.scored}, dead {summary.dead_letters})")
    print(f"scoring only            : {n / scoring_s:8.1f} items/s  ({scoring_s:.1f} s, model already loaded)")
    print(f"scoring only + load     : {n / with_load_s:8.1f} items/s  ({with_load_s:.1f} s)")
    print(f"ratio end to end / scoring only        : wall {scoring_s / end_to_end_s:.2f}, "
          f"CPU {scoring_cpu / end_to_end_cpu:.2f}  (goal >= 0.8)")
    print(f"ratio end to end / scoring only + load : wall {with_load_s / end_to_end_s:.2f}, "
          f"CPU {with_load_cpu / end_to_end_cpu:.2f}")
    print(f"CPU seconds: end to end {end_to_end_cpu:.1f}, scoring only {scoring_cpu:.1f}, + load {with_load_cpu:.1f}")


if __name__ == "__main__":
    main()
