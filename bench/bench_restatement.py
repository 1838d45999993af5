"""Cost of restating late items in the streaming state: a lagging partition against in-order.

    python bench/bench_restatement.py                     # 20,000 items, 10 tickers, lag 6 h
    python bench/bench_restatement.py --lag 1d --bundle 500

One run, one process, the default aggregation settings (3-day horizon, 5-minute cadence, 1 h
half-life, top 5) and the allowed lateness (the horizon). The same items, 20 s of event time apart,
are folded into a ``StreamState`` in bundles of ``--bundle`` records:
1. in order (the baseline): every item is newer than its ticker's latest point;
2. two partitions, odd items lagging ``--lag`` behind in event time: each bundle of the lagging
   partition restates the points of every ticker it touches.
Prints items/s of both and their ratio, and the points each wrote.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from models.aggregation import AggregationConfig
from pipeline.cli_args import duration_seconds
from pipeline.stream_state import StreamState

TICKERS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOGL", "META", "JPM", "XOM", "BA")
T0 = 1_714_550_400.0


def feed(n: int, spacing_s: float) -> list[tuple[str, str, float, float, float]]:
    rng = random.Random(7)
    return [(TICKERS[(i // 2) % len(TICKERS)], f"i{i}", T0 + i * spacing_s, rng.uniform(-1, 1), rng.uniform(-2, 0))
            for i in range(n)]


def fold_all(bundles: list[list[tuple]], cfg: AggregationConfig) -> tuple[float, int, int]:
    state = StreamState(cfg)
    points = late = 0
    start = time.perf_counter()
    for bundle in bundles:
        folded = state.fold(bundle)
        points += len(folded.points)
        late += folded.late
    return time.perf_counter() - start, points, late


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--lag", type=duration_seconds, default=6 * 3600.0)
    p.add_argument("--bundle", type=int, default=100)
    args = p.parse_args()
    cfg = AggregationConfig()
    rows = feed(args.items, 20.0)
    in_order = [rows[i:i + args.bundle] for i in range(0, len(rows), args.bundle)]
    ahead, behind = rows[0::2], rows[1::2]
    # Each poll is one bundle of one partition; the lagging partition's bundle arrives with the
    # other's bundle that is `lag` newer in event time.
    polls = sorted([(ahead[i][2], 0, ahead[i:i + args.bundle]) for i in range(0, len(ahead), args.bundle)]
                   + [(behind[i][2] + args.lag, 1, behind[i:i + args.bundle]) for i in range(0, len(behind), args.bundle)])
    lagging_bundles = [bundle for _, _, bundle in polls]
    fold_all(in_order[: len(in_order) // 4], cfg)  # warm up
    base_s, base_points, _ = fold_all(in_order, cfg)
    lag_s, lag_points, late = fold_all(lagging_bundles, cfg)
    print(f"in order:         {len(rows) / base_s:10,.0f} items/s  ({base_s:.2f} s, {base_points:,} points written, "
          f"{len(in_order)} bundles)")
    print(f"lagging {args.lag / 3600:g} h:     {len(rows) / lag_s:10,.0f} items/s  ({lag_s:.2f} s, "
          f"{lag_points:,} points written, {len(lagging_bundles)} bundles, {late} late)")
    print(f"ratio lagging / in order: {base_s / lag_s:.3f}")


if __name__ == "__main__":
    main()
