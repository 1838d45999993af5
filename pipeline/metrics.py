"""What the streaming job reports while it runs: a log line every few seconds and Prometheus.

Counters live in one :class:`StreamMetrics` per run in the job's process; the source (consumed)
reports through :class:`connectors.kafka.source.RunControl`, the consumer lag is the broker's
(:class:`connectors.kafka.offsets.BrokerLag`: end offsets minus committed), the sink records scored items,
dead letters, duplicates and end-to-end latency (Kafka record timestamp -> row committed in
DuckDB). Prometheus reads the same numbers through a collector, so the two never disagree.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

LATENCY_WINDOW = 20_000  # latest latencies kept for the percentiles


class StreamMetrics:
    """Thread-safe counters and a window of recent end-to-end latencies (seconds)."""

    def __init__(self, consumed: Callable[[], int] = lambda: 0, lag: Callable[[], int] = lambda: 0) -> None:
        self._consumed = consumed
        self._lag = lag
        self._lock = threading.Lock()
        self.scored = 0
        self.dead_lettered = 0
        self.duplicates = 0
        self.points = 0
        self.late = 0  # items older than the allowed lateness: some final points do not count them
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._latency_count = 0
        self._latency_sum = 0.0

    def add(self, scored: int = 0, dead_lettered: int = 0, duplicates: int = 0, points: int = 0,
            late: int = 0) -> None:
        with self._lock:
            self.scored += scored
            self.dead_lettered += dead_lettered
            self.duplicates += duplicates
            self.points += points
            self.late += late

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)
            self._latency_count += 1
            self._latency_sum += seconds

    @property
    def consumed(self) -> int:
        return self._consumed()

    @property
    def lag(self) -> int:
        return self._lag()

    def latency_percentiles(self, *qs: float) -> tuple[float | None, ...]:
        with self._lock:
            values = np.fromiter(self._latencies, dtype=float)
        if not values.size:
            return tuple(None for _ in qs)
        return tuple(float(v) for v in np.percentile(values, [q * 100 for q in qs]))

    def latency_totals(self) -> tuple[int, float]:
        with self._lock:
            return self._latency_count, self._latency_sum

    def line(self) -> str:
        p50, p99 = self.latency_percentiles(0.5, 0.99)
        latency = "n/a" if p50 is None else f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        return (f"stream: consumed {self.consumed:,}, scored {self.scored:,}, dead-lettered "
                f"{self.dead_lettered:,}, duplicates {self.duplicates:,}, late {self.late:,}, consumer lag {self.lag:,}, "
                f"end-to-end latency {latency}")


@dataclass(frozen=True)
class WorkerCounts:
    """What the launcher of a stream that ran on the runner's workers can report: the graph's
    Beam counters as the runner committed them (lateness, lag and latency are in the workers' logs)."""

    read: int
    scored: int
    dead_lettered: int

    def line(self) -> str:
        return (f"stream: read {self.read:,}, scored {self.scored:,}, dead-lettered {self.dead_lettered:,} "
                "(the runner's counters; lateness, lag and latency are in the workers' logs)")


class PeriodicLogger:
    """Logs ``metrics.line()`` every ``interval_s`` from a daemon thread until stopped; also runs
    ``every_second`` (if given) about once a second, for housekeeping such as offset commits."""

    def __init__(self, metrics: StreamMetrics, interval_s: float = 5.0,
                 every_second: Callable[[], None] | None = None) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.every_second = every_second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tickerpulse-metrics", daemon=True)

    def start(self) -> "PeriodicLogger":
        self._thread.start()
        return self

    def _run(self) -> None:
        next_line = time.monotonic() + self.interval_s
        while not self._stop.wait(min(1.0, self.interval_s)):
            if self.every_second is not None:
                try:
                    self.every_second()
                except Exception:  # housekeeping must not kill the reporter; the job goes on
                    log.exception("periodic task failed")
            if time.monotonic() >= next_line:
                next_line += self.interval_s
                log.info(self.metrics.line())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 1)


class _Collector:
    """Exposes a StreamMetrics to prometheus_client at scrape time."""

    def __init__(self, metrics: StreamMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        m = self.metrics
        for name, value, help_ in (
                ("consumed", m.consumed, "Kafka records read"),
                ("scored", m.scored, "items scored and written"),
                ("dead_lettered", m.dead_lettered, "records written to dead_letters"),
                ("duplicates", m.duplicates, "records dropped as a repeated item id"),
                ("late_items", m.late, "items older than the allowed lateness (stored; some final points miss them)"),
                ("sentiment_points", m.points, "ticker_sentiment rows written (incl. updates)")):
            yield CounterMetricFamily(f"tickerpulse_{name}", help_, value=value)
        yield GaugeMetricFamily("tickerpulse_consumer_lag", "records behind the partitions' ends", value=m.lag)
        count, total = m.latency_totals()
        yield SummaryMetricFamily("tickerpulse_end_to_end_latency_seconds",
                                  "Kafka record timestamp to row committed in DuckDB",
                                  count_value=count, sum_value=total)
        for q, value in zip((0.5, 0.99), m.latency_percentiles(0.5, 0.99)):
            if value is not None:
                yield GaugeMetricFamily(f"tickerpulse_end_to_end_latency_p{int(q * 100)}_seconds",
                                        f"p{int(q * 100)} of the latest end-to-end latencies", value=value)


def serve_prometheus(metrics: StreamMetrics, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
    """Start ``/metrics`` on ``host:port`` with its own registry; returns a function that stops it."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_Collector(metrics))
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
