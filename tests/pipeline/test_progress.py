from __future__ import annotations

from pipeline.progress import ProgressMeter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reports_rate_and_eta_at_most_every_interval():
    clock = Clock()
    meter = ProgressMeter("scored", total=1000, interval_s=5.0, clock=clock)
    clock.now = 200.0  # time before the first item (a model load) is not counted
    assert meter.add() is None
    clock.now = 202.0
    assert meter.add(99) is None
    clock.now = 205.0
    assert meter.add(150) == "scored: 250/1,000, 50 items/s, ETA 0:00:15"
    clock.now = 206.0
    assert meter.add() is None


def test_a_started_meter_counts_the_time_of_the_first_chunk():
    clock = Clock()
    meter = ProgressMeter("eval", total=1000, interval_s=5.0, clock=clock)
    meter.start()
    clock.now += 10.0  # the first chunk is scored, then counted
    assert meter.add(1000) == "eval: 1,000/1,000, 100 items/s, ETA 0:00:00"
    assert meter.done() == "eval: 1,000/1,000, 100 items/s, ETA 0:00:00"


def test_unknown_total_has_no_eta():
    clock = Clock()
    meter = ProgressMeter("read", interval_s=1.0, clock=clock)
    meter.add()
    clock.now += 2
    assert meter.add(3) == "read: 4, 2 items/s"
