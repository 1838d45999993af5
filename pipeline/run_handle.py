"""A streaming job's parts in one worker process, reached by its DoFns through Beam's ``Shared``.

The source, the dedupe step and the writer of a streaming job share one object per worker process
(the DuckDB writer or the publisher, the offset ledger, the run control, the metrics): the
*run*. Its DoFns carry a picklable :class:`RunHandle`; in whatever process they land, the handle
opens that process's run on first use (``Shared`` keys it, so every DoFn of the job there gets
the same one). On the local runner that process is the job's own, which opens the run before the
pipeline starts and closes it after; where the SDK harness is another process (a job service, a
distributed runner) the run is opened there, and closed when its last DoFn is torn down.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import apache_beam as beam
from apache_beam.utils.shared import Shared

from connectors.kafka.offsets import BrokerLag
from connectors.kafka.source import RunControl
from pipeline.metrics import PeriodicLogger, StreamMetrics, serve_prometheus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observing:
    """What a run reports on: its consumer group and topics, and where and how often."""

    bootstrap_servers: str
    group_id: str
    topics: tuple[str, ...]
    metrics_port: int | None = None
    metrics_interval_s: float = 5.0


class Observers:
    """One run's reporting: Prometheus (with a port), the broker-lag poller and the progress line
    (whose thread also runs the run's once-a-second housekeeping)."""

    def __init__(self, observing: Observing, control: RunControl) -> None:
        self.observing = observing
        self.broker_lag = BrokerLag(observing.bootstrap_servers, observing.group_id, observing.topics)
        self.metrics = StreamMetrics(consumed=lambda: control.consumed, lag=lambda: self.broker_lag.value)
        self._progress: PeriodicLogger | None = None
        self._stop_server: Callable[[], None] | None = None

    def start(self, every_second: Callable[[], object]) -> None:
        if self.observing.metrics_port:
            self._stop_server = serve_prometheus(self.metrics, self.observing.metrics_port)
        self.broker_lag.start()
        self._progress = PeriodicLogger(self.metrics, self.observing.metrics_interval_s,
                                        every_second=every_second).start()

    def stop(self, close: Callable[[], object]) -> None:
        """Stop the progress line, run ``close`` (the final commit), then read the lag after it
        for the last line."""
        if self._progress is not None:
            self._progress.stop()
        try:
            close()
        finally:
            self.broker_lag.stop()
            self.broker_lag.refresh()
            self.broker_lag.close()
            if self._stop_server is not None:
                self._stop_server()
            log.info(self.metrics.line())


class SharedRun:
    """Base of a run: it counts the DoFns using it, and the last to leave closes it (once).

    The job reads three things of it: ``control`` (its source's), ``metrics``, and ``fault``
    (an error that ended its writing, raised once the run is closed). Closing stops its
    ``observers`` around ``_finish``, the subclass's final commit and release of what it opened."""

    control: RunControl
    metrics: StreamMetrics

    def __init__(self) -> None:
        self.fault: Exception | None = None
        self.observers: Observers | None = None
        self._users = 0
        self._users_lock = threading.Lock()
        self.closed = False

    def observed_by(self: R, observers: Observers) -> R:
        """Start reporting on this run (progress line, metrics) and checking each second whether
        an offset commit is due."""
        self.observers = observers
        observers.start(every_second=self.commit_due)
        return self

    def commit_due(self) -> None:
        raise NotImplementedError

    def attach(self) -> "SharedRun":
        with self._users_lock:
            self._users += 1
        return self

    def release(self) -> None:
        with self._users_lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.close()

    def close(self) -> None:
        with self._users_lock:
            if self.closed:
                return
            self.closed = True
        if self.observers is not None:
            self.observers.stop(close=self._finish)
        else:
            self._finish()

    def _finish(self) -> None:
        raise NotImplementedError


R = TypeVar("R", bound=SharedRun)


class _Slot(Generic[R]):
    """A handle's current run in this process; a new one opens after the last one closed (a
    harness that discarded a failed bundle's DoFns starts again, as a restarted job would)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._run: R | None = None

    def current(self, open_run: Callable[[], R]) -> R:
        with self._lock:
            if self._run is None or self._run.closed:
                self._run = open_run()
                self._run.slot = self  # Shared holds the slot weakly: it lives as long as its run
            return self._run


class RunHandle(Generic[R]):
    """Picklable; travels with the DoFns. ``open_run`` (picklable too) opens a run in a process."""

    def __init__(self, open_run: Callable[[], R], run_id: str) -> None:
        self._shared = Shared()
        self._open = open_run
        self.run_id = run_id

    def __call__(self) -> R:
        """This process's run, opened on first use; not counted as a user (the source's session)."""
        return self._shared.acquire(_Slot, tag=self.run_id).current(self._open)

    def attach(self) -> R:
        """This process's run, counted as a user until ``release`` (a DoFn's setup and teardown)."""
        return self().attach()


class RunDoFn(beam.DoFn):
    """A DoFn that uses its process's run from ``setup`` to ``teardown``."""

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle

    def setup(self) -> None:
        self.shared_run = self.handle.attach()

    def teardown(self) -> None:
        shared_run = self.__dict__.pop("shared_run", None)
        if shared_run is not None:
            shared_run.release()
