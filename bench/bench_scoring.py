"""Scoring throughput: the engine vs a plain transformers loop, same model, same texts, one run.

The baseline is what a user would write first: batches of 64 in input order, padded to 64
tokens, fp32, ``torch.no_grad``. The engine runs as the pipeline calls it (defaults of
``SentimentEngine.load()``: precision auto), plus each precision (fp32, bf16, int8) with its
macro-F1 on the same texts, so each gain and its cost are visible. The padding waste (padded
positions that hold no token) of both batchings is printed. Texts are distinct (duplicates
dropped) so the engine's cache cannot inflate its figure.

    python bench/bench_scoring.py [--texts 2000] [--threads 2]
"""
from __future__ import annotations

import argparse
import csv
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.classifier import load_classifier  # noqa: E402
from models.data import LABELS, macro_f1  # noqa: E402
from models.engine import SentimentEngine, _bucket_rows, _bucket_width  # noqa: E402
from models.precision import cpu_flags, resolve_precision  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "../shared/data/twitter_financial_news_sentiment/sent_valid.csv"
TWEET_LABELS = {"0": "negative", "1": "positive", "2": "neutral"}


def distinct_texts(path: Path, n: int) -> tuple[list[str], list[int]]:
    """The first ``n`` distinct texts and their labels (indices into LABELS)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = {row["text"]: LABELS.index(TWEET_LABELS[row["label"]]) for row in reversed(list(csv.DictReader(handle)))}
    texts = list(reversed(rows))
    if len(texts) < n:
        raise SystemExit(f"{path} has only {len(texts)} distinct texts, {n} asked")
    return texts[:n], [rows[t] for t in texts[:n]]


def padding_waste(texts: list[str], batch_size: int = 64) -> tuple[float, float]:
    """Share of padded positions holding no token: (plain loop padded to 64, engine's sorted and
    shape-bucketed batches)."""
    classifier = load_classifier()
    lengths = [len(ids) for ids in classifier.tokenizer(texts, truncation=True, max_length=classifier.max_length)["input_ids"]]
    plain = 1 - sum(min(n, 64) for n in lengths) / (64 * len(lengths))
    ordered = sorted(lengths)
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    padded = sum(_bucket_width(max(b), classifier.max_length) * _bucket_rows(len(b), batch_size) for b in batches)
    return plain, 1 - sum(ordered) / padded


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_loop(texts: list[str], batch_size: int = 64, length: int = 64) -> float:
    """items/s of the naive loop over the bundled model, fp32, padded to ``length``."""
    classifier = load_classifier()
    model, tokenizer = classifier.model.eval(), classifier.tokenizer
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start: start + batch_size], padding="max_length", truncation=True,
                              max_length=length, return_tensors="pt")
            torch.softmax(model(**batch).logits, dim=-1)
    return len(texts) / (time.perf_counter() - started)


def engine_run(texts: list[str], labels: list[int], precision: str) -> tuple[float, float, str]:
    """(items/s, macro-F1, engine name) of one cold pass over ``texts``."""
    engine = SentimentEngine.load(device="cpu", precision=precision)
    started = time.perf_counter()
    predictions = engine.predict(texts)
    rate = len(texts) / (time.perf_counter() - started)
    return rate, macro_f1(labels, [LABELS.index(p.label) for p in predictions]), engine.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts, labels = distinct_texts(args.data, args.texts)
    fast_bf16 = sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"}) or "none"
    print(f"{len(texts)} distinct texts from {args.data.name}, torch {torch.__version__}, {args.threads} threads, "
          f"CPU bf16 flags: {fast_bf16}, auto precision here: {resolve_precision('auto', 'cpu')}")
    plain_waste, engine_waste = padding_waste(texts)
    print(f"padding waste: plain loop {plain_waste:.0%}, engine's sorted batches {engine_waste:.0%}")

    baseline = plain_loop(texts)
    print(f"plain loop (batch 64, padded to 64, fp32): {baseline:8.1f} items/s   peak RSS {peak_rss_mib():.0f} MiB")
    figures = {}
    for label, precision in (("engine default", "auto"), ("engine fp32", "fp32"), ("engine bf16", "bf16"),
                             ("engine int8", "int8")):
        rate, f1, name = engine_run(texts, labels, precision)
        figures[label] = rate
        print(f"{label:<16} [{name}]: {rate:8.1f} items/s  x{rate / baseline:4.1f}  macro-F1 {f1:.4f}   "
              f"peak RSS {peak_rss_mib():.0f} MiB")
    print(f"ratio engine default / plain loop: {figures['engine default'] / baseline:.2f} "
          f"(goal >= 8), engine default {figures['engine default']:.0f} items/s (goal >= 1,200)")


if __name__ == "__main__":
    main()
