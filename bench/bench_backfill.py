"""Backfill end to end vs scoring only, same items, same model, one run (issue 4; goal ratio >= 0.8).

    python bench/bench_backfill.py [--n 5000] [--data CSV] [--model PATH]

End to end = ``tickerpulse backfill`` of a JSONL file into a fresh DuckDB file: read, parse,
tickers, dedupe, novelty, RunInference scoring, relevance, aggregation, sink; it includes the
pipeline start and the model load. Scoring only = ``SentimentEngine.predict`` over the same texts
in the pipeline's batch size, with and without its model load, measured before and after the
pipeline run.

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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.engine import SentimentEngine  # noqa: E402
from pipeline.backfill import Summary, run_backfill  # noqa: E402
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


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float


def end_to_end(corpus: list[str], model: str | None) -> tuple[Timing, Summary]:
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "bench.jsonl"
        with open(jsonl, "w", encoding="utf-8") as out:
            for i, text in enumerate(corpus):
                out.write(json.dumps({"id": f"b{i}", "text": text, "published_at": T0_MS + i * 30_000,
                                      "source": "news" if i % 3 else "comment"}) + "\n")
        argv = ["--input", str(jsonl), "--db", str(Path(tmp) / "bench.duckdb"), "--progress-interval", "1000s"]
        if model:
            argv += ["--model", model]
        cpu_started = time.process_time()
        summary = run_backfill(argv)
        return Timing(summary.seconds, time.process_time() - cpu_started), summary


def scoring_only(corpus: list[str], model: str | None) -> tuple[Timing, Timing, SentimentEngine]:
    """(scoring, scoring + model load)"""
    started, cpu_started = time.perf_counter(), time.process_time()
    engine = SentimentEngine.load(model, "auto")  # as the pipeline scores by default
    loaded, cpu_loaded = time.perf_counter(), time.process_time()
    for start in range(0, len(corpus), DEFAULT_BATCH_SIZE):
        engine.predict(corpus[start:start + DEFAULT_BATCH_SIZE])
    scoring = Timing(time.perf_counter() - loaded, time.process_time() - cpu_loaded)
    return scoring, Timing(time.perf_counter() - started, time.process_time() - cpu_started), engine


def mean(a: Timing, b: Timing) -> Timing:
    return Timing((a.wall_s + b.wall_s) / 2, (a.cpu_s + b.cpu_s) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    corpus = texts(args.data, args.n)
    n = len(corpus)

    # Baseline before and after, so a change in the machine's load during the run shows up.
    before, before_load, engine = scoring_only(corpus, args.model)
    pipeline, summary = end_to_end(corpus, args.model)
    after, after_load, _ = scoring_only(corpus, args.model)
    scoring, with_load = mean(before, after), mean(before_load, after_load)

    print(f"items: {n}  model: {engine.name}  device: {engine.device}  batch: {DEFAULT_BATCH_SIZE}")
    print(f"backfill end to end : {n / pipeline.wall_s:7.1f} items/s  ({pipeline.wall_s:.1f} s wall, {pipeline.cpu_s:.1f} s CPU;"
          f" incl. start-up and model load; scored {summary.scored}, dead {summary.dead_letters})")
    for name, t in (("scoring only before", before), ("scoring only after", after), ("scoring only + load", with_load)):
        print(f"{name:<20}: {n / t.wall_s:7.1f} items/s  ({t.wall_s:.1f} s wall, {t.cpu_s:.1f} s CPU)")
    print(f"ratio end to end / mean scoring only        : wall {scoring.wall_s / pipeline.wall_s:.2f}, "
          f"CPU {scoring.cpu_s / pipeline.cpu_s:.2f}  (goal >= 0.8)")
    print(f"ratio end to end / mean scoring only + load : wall {with_load.wall_s / pipeline.wall_s:.2f}, "
          f"CPU {with_load.cpu_s / pipeline.cpu_s:.2f}")


if __name__ == "__main__":
    main()
