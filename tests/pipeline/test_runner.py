"""The local runner's workarounds of apache-beam 2.77 (pipeline/runner.py)."""
from __future__ import annotations

import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import statesampler
from apache_beam.utils import counters

from pipeline.cli_args import UsageError
from pipeline.runner import STATE_SAMPLING_PERIOD_MS, make_pipeline


def test_a_bundle_that_ran_for_a_second_stops_its_state_sampler_within_milliseconds():
    """Beam's sampler sleeps up to 200 ms between samples, and a bundle's end waits for it."""
    make_pipeline(PipelineOptions([]))
    patched = statesampler.StateSampler
    make_pipeline(PipelineOptions([]))
    assert statesampler.StateSampler is patched  # not wrapped twice
    samplers = [statesampler.StateSampler(f"stage-{i}", counters.CounterFactory()) for i in range(5)]
    assert all(s.sampling_period_ms == STATE_SAMPLING_PERIOD_MS for s in samplers)
    for sampler in samplers:
        sampler.start()
    time.sleep(1.2)  # past the ramp: Beam's default would now sleep 200 ms between samples
    waits = []
    for sampler in samplers:
        started = time.perf_counter()
        sampler.stop()
        waits.append(time.perf_counter() - started)
    assert max(waits) < 0.1, waits


def test_a_runner_beam_does_not_know_is_a_usage_error():
    with pytest.raises(UsageError, match="^--runner Bogus: Unexpected pipeline runner: Bogus"):
        make_pipeline(PipelineOptions(["--runner", "Bogus"]))
