"""A progress line every few seconds: count, rate and (when the total is known) ETA."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

log = logging.getLogger("tickerpulse.progress")


def format_eta(seconds: float) -> str:
    return str(timedelta(seconds=round(max(seconds, 0.0))))


class ProgressMeter:
    """Counts items and logs ``<label>: n/total, x items/s, ETA h:mm:ss`` at most every interval."""

    def __init__(self, label: str, total: int | None = None, interval_s: float = 5.0,
                 clock=time.monotonic) -> None:
        self.label = label
        self.total = total
        self.interval_s = interval_s
        self.count = 0
        self._clock = clock
        self._start: float | None = None  # the first item, not set-up (a model load is not work)
        self._last_report = 0.0

    def start(self) -> None:
        """Work begins now: for callers that count after each chunk of work, whose first ``add``
        comes only when the first chunk is done (else that chunk's time would not count)."""
        if self._start is None:
            self._start = self._last_report = self._clock()

    def add(self, n: int = 1) -> str | None:
        """Count ``n`` more; returns the line when one is due (and logs it). Without ``start``,
        time counts from the first ``add``."""
        now = self._clock()
        if self._start is None:
            self._start = self._last_report = now
        self.count += n
        if now - self._last_report < self.interval_s:
            return None
        self._last_report = now
        line = self.line(now)
        log.info(line)
        return line

    def done(self) -> str:
        """Log the final line (count and overall rate), whatever the interval."""
        line = self.line()
        log.info(line)
        return line

    def line(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        elapsed = max(now - (now if self._start is None else self._start), 1e-9)
        rate = self.count / elapsed
        done = f"{self.count:,}" if self.total is None else f"{self.count:,}/{self.total:,}"
        text = f"{self.label}: {done}, {rate:,.0f} items/s"
        if self.total and rate > 0:
            text += f", ETA {format_eta((self.total - self.count) / rate)}"
        return text
