"""How the scoring engine's RSS moves when its batches vary in shape, as a stream's bundles do.

The engine alone (bundled model, precision auto, result cache off so every text is scored), one
fresh process per workload so that each RSS starts clean. Baseline: every batch 64 texts of 20
words, one shape. Varied: each call 1-300 texts of 3-40 words, seeded, as bundles of a live stream
arrive. Prints RSS every 20 s, then per workload the growth over the last two thirds of the run,
end to end and by a fitted slope (the stream's RSS goal is <= 2% over the last 20 of 30
minutes), items/s, and the varied workload's figures against the baseline's.

``python bench/bench_engine_rss.py [--seconds 300]``
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_duckdb_rss import rss_mib  # noqa: E402

WORKLOADS = ("fixed shape", "varied shapes")
REPORT_EVERY_S = 20
WORDS = [f"w{i}" for i in range(5000)] + "shares profit loss rose fell contract order guidance".split()


def batches(workload: str, seed: int = 1):
    """Endless distinct batches of the workload's shapes."""
    rng = random.Random(seed)
    call = 0
    while True:
        size, lengths = (64, [20] * 64) if workload == "fixed shape" else (
            rng.randint(1, 300), [rng.randint(3, 40) for _ in range(300)])
        yield [" ".join(rng.choices(WORDS, k=lengths[j])) + f" {call}-{j}" for j in range(size)]
        call += 1


def score_for(workload: str, seconds: float) -> None:
    """The child: score the workload for ``seconds``, printing ``elapsed_s texts rss_mib`` lines."""
    import torch

    from models.classifier import load_classifier
    from models.engine import SentimentEngine
    from models.precision import resolve_precision

    engine = SentimentEngine(load_classifier(None), torch.device("cpu"), resolve_precision("auto", "cpu"), cache_size=0)
    print(f"precision {engine.precision}", flush=True)
    started, texts, reported = time.perf_counter(), 0, -1
    for batch in batches(workload):
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
        engine.predict(batch)
        texts += len(batch)
        if int(elapsed // REPORT_EVERY_S) != reported:
            reported = int(elapsed // REPORT_EVERY_S)
            print(f"{elapsed:.0f} {texts} {rss_mib()}", flush=True)
    print(f"{time.perf_counter() - started:.0f} {texts} {rss_mib()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seconds < 3 * REPORT_EVERY_S:
        parser.error(f"--seconds must be at least {3 * REPORT_EVERY_S}: the fit needs two readings in the last two thirds")
    if args.child:
        score_for(args.child, args.seconds)
        return
    results = {}
    for workload in WORKLOADS:
        out = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--child", workload],
                             check=True, capture_output=True, text=True).stdout.splitlines()
        print(f"{workload} ({out[0]}): RSS " + ", ".join(
            f"{line.split()[2]} MiB at {line.split()[0]} s" for line in out[1:]), flush=True)
        readings = [tuple(map(float, line.split())) for line in out[1:]]
        last = [r for r in readings if r[0] >= args.seconds / 3]
        end = readings[-1]
        results[workload] = (end[2] / last[0][2] - 1, fitted_growth(last), end[1] / end[0], end[2])
    for workload, (growth, fitted, rate, rss) in results.items():
        print(f"{workload}: RSS {rss:.0f} MiB at the end; over the last two thirds {growth:+.1%} end to end, "
              f"{fitted:+.1%} fitted; {rate:.0f} items/s")
    base, varied = results["fixed shape"], results["varied shapes"]
    print(f"varied / fixed: end RSS x{varied[3] / base[3]:.2f}, items/s x{varied[2] / base[2]:.2f}")


def fitted_growth(readings: list[tuple[float, ...]]) -> float:
    """Least-squares RSS slope over the readings' span, as a share of the first reading: one
    reading's wobble (a few MiB either way) does not decide it."""
    times, rss = [r[0] for r in readings], [r[2] for r in readings]
    t_mean, r_mean = sum(times) / len(times), sum(rss) / len(rss)
    slope = sum((t - t_mean) * (r - r_mean) for t, r in zip(times, rss)) / sum((t - t_mean) ** 2 for t in times)
    return slope * (times[-1] - times[0]) / rss[0]


if __name__ == "__main__":
    main()
