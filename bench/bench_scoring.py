"""Scoring throughput: the engine vs a plain transformers loop, same model, same texts, one run.

The baseline is what a user would write first: batches of 64 in input order, padded to 64
tokens, fp32, ``torch.no_grad``. The engine runs as the pipeline calls it (defaults of
``SentimentEngine.load()``), plus its fp32 and int8 variants so each gain is visible.
Texts are distinct (duplicates dropped) so the engine's cache cannot inflate its figure.

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
from models.engine import SentimentEngine  # noqa: E402

DATA = Path("/work/shared/data/twitter_financial_news_sentiment/sent_valid.csv")


def distinct_texts(path: Path, n: int) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        texts = list(dict.fromkeys(row["text"] for row in csv.DictReader(handle)))
    if len(texts) < n:
        raise SystemExit(f"{path} has only {len(texts)} distinct texts, {n} asked")
    return texts[:n]


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


def engine_rate(texts: list[str], quantize: bool | None) -> tuple[float, str]:
    engine = SentimentEngine.load(device="cpu", quantize=quantize)
    started = time.perf_counter()
    engine.predict(texts)
    return len(texts) / (time.perf_counter() - started), engine.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = distinct_texts(args.data, args.texts)
    print(f"{len(texts)} distinct texts from {args.data.name}, torch {torch.__version__}, {args.threads} threads")

    baseline = plain_loop(texts)
    print(f"plain loop (batch 64, padded to 64, fp32): {baseline:8.1f} items/s   peak RSS {peak_rss_mib():.0f} MiB")
    figures = {}
    for label, quantize in (("engine default", None), ("engine fp32", False), ("engine int8", True)):
        rate, name = engine_rate(texts, quantize)
        figures[label] = rate
        print(f"{label:<16} [{name}]: {rate:8.1f} items/s  x{rate / baseline:4.1f}   peak RSS {peak_rss_mib():.0f} MiB")
    print(f"ratio engine default / plain loop: {figures['engine default'] / baseline:.2f} "
          f"(goal >= 5), engine default {figures['engine default']:.0f} items/s (goal >= 250)")


if __name__ == "__main__":
    main()
