"""Speed of the three recency-attention forms against the issue's goals (prints figures).

Goals (issue 3): torch module on CPU >= 1M item-weights/s; incremental update >= 100k items/s
in Python; SQL macro over 1M items for 100 tickers at 96 time points < 5 s. Each figure comes
with a baseline measured in the same run: the formula written out in Python (torch and
incremental) and an unweighted sliding mean over the same range join (SQL).

    python bench/bench_aggregation.py [--tickers 100] [--per-ticker 400] [--stream-items 100000]
                                      [--sql-items 1000000] [--sql-points 96] [--threads N]

Wall-clock figures depend on how busy the machine is; CPU-second figures less so.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.duckdb.schema import create_schema  # noqa: E402
from connectors.duckdb.sentiment_macro import install_sentiment_macro  # noqa: E402
from models.aggregation import AggregationConfig, TickerState, aggregate_tickers  # noqa: E402
from models.aggregation_attention import RecencyAttention, horizon_pairs  # noqa: E402

T0 = 1_699_999_800.0
DAY = 86400.0


def synthetic(n_tickers: int, per_ticker: int, span_s: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(n_tickers):
        ts = np.sort(T0 + rng.uniform(0, span_s, per_ticker))
        out[f"T{k:03d}"] = list(zip((f"T{k:03d}-{i}" for i in range(per_ticker)), ts.tolist(),
                                    rng.uniform(-1, 1, per_ticker).tolist(),
                                    rng.normal(0, 0.7, per_ticker).tolist()))
    return out


def python_formula(items, as_of, h, horizon):
    """The written-out formula: the baseline for both torch and incremental forms."""
    inside = [it for it in items if as_of - horizon < it[1] <= as_of]
    logits = [r - math.log(2) * (as_of - ts) / h for _, ts, _, r in inside]
    top = max(logits)
    e = [math.exp(x - top) for x in logits]
    return math.fsum(x * it[2] for x, it in zip(e, inside)) / math.fsum(e), len(inside)


def clocked(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_torch(n_tickers: int, per_ticker: int) -> None:
    cfg = AggregationConfig()
    items = synthetic(n_tickers, per_ticker, span_s=3 * DAY)
    points, wall, cpu = clocked(lambda: aggregate_tickers(items, cfg))
    weights = sum(p.n_items for p in points)
    # the module alone on one big chunk of pairs (what a GPU would run)
    ts = torch.tensor([it[1] for it in items["T000"]], dtype=torch.float64)
    grid = torch.arange(math.ceil(ts[0] / 300) * 300, float(ts[-1]) + 300, 300, dtype=torch.float64)
    lo = torch.searchsorted(ts, grid - cfg.horizon_s, right=True)
    hi = torch.searchsorted(ts, grid, right=True)
    lo, hi, grid = lo[hi > lo], hi[hi > lo], grid[hi > lo]
    pq, pi = horizon_pairs(lo, hi)
    score = torch.rand(len(ts), dtype=torch.float64)
    rel = torch.randn(len(ts), dtype=torch.float64)
    module = RecencyAttention()
    half_life = torch.full_like(grid, 3600.0)
    module(ts, score, rel, grid, half_life, pq, pi)  # warm-up
    _, module_wall, module_cpu = clocked(
        lambda: [module(ts, score, rel, grid, half_life, pq, pi) for _ in range(5)])
    base_items = items["T000"]
    base_points = [p for p in points if p.ticker == "T000"][:40]
    _, base_wall, base_cpu = clocked(lambda: [python_formula(base_items, p.ts_s, p.half_life_s,
                                                             cfg.horizon_s) for p in base_points])
    base_weights = sum(p.n_items for p in base_points)
    base_rate = base_weights / base_wall
    print(f"torch batch, end to end: {n_tickers} tickers x {per_ticker} items over 3 d, "
          f"{len(points)} points, {weights:,} item-weights in {wall:.2f} s wall / {cpu:.2f} s CPU"
          f" = {weights / wall / 1e6:.2f} M item-weights/s wall, {weights / cpu / 1e6:.2f} M/s "
          f"per CPU-second (goal >= 1 M)")
    print(f"torch module alone: {5 * len(pq):,} item-weights in {module_wall:.2f} s wall / "
          f"{module_cpu:.2f} s CPU = {5 * len(pq) / module_wall / 1e6:.2f} M item-weights/s wall, "
          f"{5 * len(pq) / module_cpu / 1e6:.2f} M/s per CPU-second "
          f"(threads={torch.get_num_threads()})")
    print(f"baseline, formula in Python: {base_rate / 1e6:.3f} M item-weights/s wall, "
          f"{base_weights / base_cpu / 1e6:.3f} M/s per CPU-second; batch end to end is "
          f"{weights / wall / base_rate:.0f}x faster (wall)")


def bench_stream(n_items: int) -> None:
    cfg = AggregationConfig()
    rng = random.Random(1)
    items, ts = [], T0
    for i in range(n_items):
        ts += rng.expovariate(1 / 3.0)  # ~29k items a day for one ticker: a busy one
        items.append((f"i{i}", ts, rng.uniform(-1, 1), rng.gauss(0, 0.7)))
    state = TickerState("AAPL", cfg)
    emitted, wall, cpu = clocked(lambda: sum(len(state.add(*it)) for it in items))
    n_base = min(3000, n_items)

    def naive():  # recompute the horizon from scratch at each item's grid point
        for j in range(n_base):
            as_of = math.ceil(items[j][1] / 300) * 300
            for h in cfg.half_lives_s:
                python_formula(items[: j + 1], as_of, h, cfg.horizon_s)

    _, base_wall, _ = clocked(naive)
    blob, dump_wall, _ = clocked(lambda: pickle.dumps(state))
    _, load_wall, _ = clocked(lambda: pickle.loads(blob))
    print(f"incremental TickerState.add: {n_items:,} items, {emitted:,} points emitted "
          f"(2 half-lives, top-5) in {wall:.2f} s wall / {cpu:.2f} s CPU = "
          f"{n_items / wall / 1e3:.0f}k items/s wall, {n_items / cpu / 1e3:.0f}k items/s CPU "
          f"(goal >= 100k)")
    print(f"baseline, recompute per item: {n_base / base_wall / 1e3:.2f}k items/s over the "
          f"first {n_base:,} items; incremental is {(n_items / wall) / (n_base / base_wall):.0f}x "
          f"faster")
    print(f"Beam state: a TickerState holding {len(state):,} in-horizon items pickles in "
          f"{dump_wall * 1e3:.1f} ms, unpickles in {load_wall * 1e3:.1f} ms "
          f"({len(blob) / 1e6:.2f} MB)")


def bench_sql(n_items: int, n_tickers: int, n_points: int) -> None:
    rng = np.random.default_rng(2)
    span_us = int(30 * DAY * 1e6)
    start_us = int(T0 * 1e6)
    ts = start_us + rng.integers(0, span_us, n_items)
    ids = [f"i{i}" for i in range(n_items)]
    now = pa.array([int(time.time() * 1e6)] * n_items, pa.timestamp("us", tz="UTC"))
    table = pa.table({
        "id": ids, "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "source": pa.array(["news"] * n_items), "text": pa.array([""] * n_items),
        "text_key": ids, "novelty_n": pa.array(np.zeros(n_items, np.int32)),
        "label": pa.array(["neutral"] * n_items), "score": rng.uniform(-1, 1, n_items),
        "prob_negative": np.zeros(n_items), "prob_neutral": np.ones(n_items),
        "prob_positive": np.zeros(n_items), "confidence": np.ones(n_items),
        "relevance": rng.normal(0, 0.7, n_items), "model": pa.array(["m"] * n_items),
        "ingested_at": now,
    })
    tags = pa.table({"item_id": ids,
                     "ticker": [f"T{k:03d}" for k in rng.integers(0, n_tickers, n_items)]})
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(os.path.join(tmp, "bench.duckdb"))
        create_schema(con)
        con.register("t_items", table)
        con.register("t_tags", tags)
        con.execute("INSERT INTO items BY NAME SELECT * FROM t_items")
        con.execute("INSERT INTO item_tickers SELECT *, 'field' AS link FROM t_tags")
        install_sentiment_macro(con)
        step_s = 900
        stop_us = start_us + span_us
        first_us = stop_us - (n_points - 1) * step_s * 1_000_000
        args = [first_us / 1e6, stop_us / 1e6, step_s]
        query = ("CREATE OR REPLACE TEMP TABLE out AS SELECT * FROM sentiment_series("
                 "NULL, to_timestamp(?), to_timestamp(?), ?, 3600.0)")
        _, wall, _ = clocked(lambda: con.execute(query, args))
        rows, pairs = con.execute("SELECT count(*), sum(n_items) FROM out").fetchone()
        baseline = """
            CREATE OR REPLACE TEMP TABLE base AS
            WITH grid AS (SELECT epoch_us(unnest(generate_series(to_timestamp(?), to_timestamp(?),
                                 to_microseconds(? * 1000000)))) AS g)
            SELECT t.ticker, g, avg(i.score) AS mean_score
            FROM items i JOIN item_tickers t ON t.item_id = i.id JOIN grid
              ON epoch_us(i.ts) <= g AND epoch_us(i.ts) > g - 259200000000
            GROUP BY ALL"""
        _, base_wall, _ = clocked(lambda: con.execute(baseline, args))
        con.close()
    print(f"SQL sentiment_series: {n_items:,} items, {n_tickers} tickers x {n_points} as-of "
          f"times (15 min apart, 3 d horizon): {rows:,} rows over {int(pairs):,} item-weights "
          f"in {wall:.2f} s (goal < 5 s)")
    print(f"baseline, unweighted sliding mean over the same join: {base_wall:.2f} s; "
          f"the macro costs {wall / base_wall:.1f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--per-ticker", type=int, default=400)
    parser.add_argument("--stream-items", type=int, default=100_000)
    parser.add_argument("--sql-items", type=int, default=1_000_000)
    parser.add_argument("--sql-points", type=int, default=96)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch intra-op threads (1 is faster on a busy machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"torch {torch.__version__}, duckdb {duckdb.__version__}")
    bench_torch(args.tickers, args.per_ticker)
    bench_stream(args.stream_items)
    bench_sql(args.sql_items, args.tickers, args.sql_points)


if __name__ == "__main__":
    main()
