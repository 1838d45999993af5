"""bench_stream's fixed-rate producer and the stream benches' corpus, in a process of its own.

    python bench/rate_producer.py BOOTSTRAP TOPIC GROUP JOB_PID OUT.json --rate 50 --duration 600 --event-spacing 30

Waits until GROUP has committed the warm-up record (offset 1 of TOPIC's partition 0), then sends
records ``b1`` .. ``bN`` at ``--rate`` per second and writes ``{"sent_at": {id: send time},
"rss": {"start", "end", "each_minute"}}`` to OUT, the RSS being JOB_PID's (MiB, from /proc). Out
of the job's process so that the job's RSS is the job's own: as a thread of it, the bookkeeping
of one send time per record was ~0.3 MiB/min of a 1.3 MiB/min slope (docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from connectors.kafka.offsets import committed_offsets  # noqa: E402

TICKERS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOGL", "META", "JPM", "XOM", "BA")
PHRASES = ("beats estimates and raises full-year guidance", "shares slump after profit warning",
           "to report quarterly results on Thursday", "wins multiyear contract worth $2 billion",
           "faces regulatory probe into accounting", "announces layoffs amid slowdown")
T0_MS = 1714550400000


def text(i: int) -> str:
    return f"${TICKERS[i % len(TICKERS)]} {PHRASES[(i // len(TICKERS)) % len(PHRASES)]}, update {i}"


def record(i: int, event_s: float) -> bytes:
    return json.dumps({"id": f"b{i}", "text": text(i), "published_at": T0_MS + int(event_s * 1000),
                       "source": "news" if i % 2 else "comment"}).encode()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("group")
    p.add_argument("job_pid", type=int)
    p.add_argument("out")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--event-spacing", type=float, required=True)
    args = p.parse_args()
    while (committed_offsets(args.bootstrap, args.group, [(args.topic, 0)])[(args.topic, 0)] or 0) < 1:
        time.sleep(0.2)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=0)
    sent_at: dict[str, float] = {}
    rss = {"start": rss_mib(args.job_pid), "each_minute": []}
    n = int(args.rate * args.duration)
    started = time.perf_counter()
    for i in range(1, n + 1):
        delay = started + i / args.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent_at[f"b{i}"] = time.time()
        producer.send(args.topic, record(i, i * args.event_spacing))
        if i % int(60 * args.rate) == 0:
            rss["each_minute"].append(rss_mib(args.job_pid))
    producer.flush()
    rss["end"] = rss_mib(args.job_pid)
    producer.close()
    Path(args.out).write_text(json.dumps({"sent_at": sent_at, "rss": rss}))


if __name__ == "__main__":
    main()
