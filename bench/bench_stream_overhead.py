"""The streaming job's own time per record: what bounds its catch-up once the scorer is fast.

    python bench/bench_stream_overhead.py                  # backlogs of 5,000 and 40,000
    python bench/bench_stream_overhead.py --records 80000

One process, a real embedded broker, the job's default settings (bench/bench_stream.py's). First
the engine alone scores texts as the job batches them (``bench_stream.scoring_only``): inference
time per record. Then the engine's ``predict`` is replaced by a constant prediction, and the job
catches up two backlogs (``--records`` / 8 and ``--records``) from a fresh database each: what
is timed is all the job does besides inference (Kafka reads, parse, linking, dedupe, novelty,
aggregation, DuckDB writes, snapshots, Beam). Own time per record = the difference between the
two runs' wall (and this process's CPU) time over the difference in records, so start-up and the
idle wait cancel. The printed bound, inference / (inference + own wall time), is the best
catch-up ratio that own time allows, if the job did nothing else and inference ran as fast as
alone: bench_stream.py measures the real one.
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from bench.bench_stream import scoring_only, stream_args
from bench.rate_producer import record
from connectors.kafka.embedded import EmbeddedBroker, create_topics
from models.engine import Prediction, SentimentEngine
from pipeline import stream

CONSTANT = (0.2, 0.3, 0.5)  # negative, neutral, positive: any fixed scores do


def constant_predict(engine: SentimentEngine, texts: list[str]) -> list[Prediction]:
    return [Prediction.from_probs(CONSTANT, engine.name)] * len(texts)


def catch_up(records: int) -> tuple[float, float]:
    """(wall s, CPU s) of the job over a backlog of ``records``, on its own broker and database."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(data_dir=Path(tmp) / "kafka") as broker:
        create_topics(broker.bootstrap_servers, ["bench"], retention_ms=-1)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
        for j in range(records):
            producer.send("bench", record(10**7 + j, 1.0 + j))
        producer.flush()
        producer.close()
        args = stream_args(broker.bootstrap_servers, str(Path(tmp) / "b.duckdb"), "bench", "2s", "1s", None)
        cpu, wall = time.process_time(), time.perf_counter()
        metrics = stream.run_stream(args)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if metrics.scored != records:
        raise SystemExit(f"the job stored {metrics.scored} of {records} records")
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=40_000, help="the larger backlog (the smaller is an eighth)")
    args = p.parse_args()
    if args.records < 8_000:
        raise SystemExit("--records must be >= 8000, so that the two backlogs differ by many bundles")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream.quiet_library_logs()
    inference_ms = 1000 / scoring_only()
    print(f"inference alone (engine, the job's batches): {inference_ms:.3f} ms per record")
    SentimentEngine.predict = constant_predict  # from here on the job scores nothing
    small, large = args.records // 8, args.records
    wall_small, cpu_small = catch_up(small)
    wall_large, cpu_large = catch_up(large)
    own_wall = 1000 * (wall_large - wall_small) / (large - small)
    own_cpu = 1000 * (cpu_large - cpu_small) / (large - small)
    print(f"job without inference: {small:,} records in {wall_small:.1f} s (CPU {cpu_small:.1f} s), "
          f"{large:,} in {wall_large:.1f} s (CPU {cpu_large:.1f} s)")
    print(f"own time per record: {own_wall:.3f} ms wall, {own_cpu:.3f} ms CPU "
          f"(this process, DuckDB's and kafka-python's threads included) = {own_wall / inference_ms:.2f} of inference")
    print(f"catch-up bound, inference / (inference + own): {inference_ms / (inference_ms + own_wall):.2f}; "
          f"0.9 needs own time <= {inference_ms / 9:.3f} ms")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
