"""Which Beam runner a job runs on: the local FnApiRunner unless ``--runner`` names another.

One definition for the backfill and the stream. Locally the SDK harness runs in the job's own
process, unless ``--direct_running_mode=multi_processing`` starts harness processes of its own.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import create_runner

from pipeline.cli_args import UsageError


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """The pipeline on the runner ``--runner`` names (a name Beam does not know is a UsageError),
    else on the local FnApiRunner."""
    name = options.view_as(StandardOptions).runner
    if name is not None:
        try:
            runner = create_runner(name)
        except ValueError as exc:  # Beam: "Unexpected pipeline runner: ... Valid values are ..."
            raise UsageError(f"--runner {name}: {exc}") from None
        return beam.Pipeline(runner=runner, options=options)
    _consolidate_runner_metrics_eagerly()
    _stop_state_sampling_promptly()
    return beam.Pipeline(runner=FnApiRunner(), options=options)


def runs_here(options: PipelineOptions) -> bool:
    """Whether the SDK harness runs in this process: the local FnApiRunner, not multi-processing."""
    return (options.view_as(StandardOptions).runner is None
            and options.view_as(DirectOptions).direct_running_mode != "multi_processing")


def _consolidate_runner_metrics_eagerly() -> None:
    """Work around a memory leak of FnApiRunner (apache-beam 2.77) in unbounded runs.

    After every bundle the runner sets its per-stage metrics to
    ``consolidate_monitoring_infos(chain(new, previous))``, which is a generator: nothing is ever
    merged, and each bundle's generator holds the previous one and that bundle's protobuf
    response. A batch job runs few bundles; a stream runs several per second, and the chain grew
    the job by ~22 KB per record at 50 records/s (native protobuf memory, invisible to
    tracemalloc). Consolidating into a list keeps one merged set of metrics per stage: with the
    source alone, malloc'd memory stayed flat from 750 to 5,000 records, against +22 MB per
    1,000 records without.
    """
    from apache_beam.metrics import monitoring_infos
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    fn_runner.consolidate_monitoring_infos = lambda infos: list(monitoring_infos.consolidate(infos))


STATE_SAMPLING_PERIOD_MS = 5


def _stop_state_sampling_promptly() -> None:
    """Work around an idle wait at the end of every bundle (apache-beam 2.77).

    Each bundle starts a state-sampler thread (Beam's per-step processing-time counters) that
    sleeps between samples, its sleep growing from 2 ms to 200 ms over the first second; the
    bundle then ends by joining it, so a bundle longer than a second waits ~100 ms on average,
    doing nothing. A streaming bundle of 500 records lasted ~1.2 s on a 2-core AMD EPYC, so that
    wait was ~0.2 ms a record: in an 8,000-record catch-up, 1.61 of 19.8 s. With
    a 5 ms ceiling the join waits at most 5 ms; the thread wakes ~200 times a second, without the
    GIL (docs/performance.md, "The idle wait at each bundle's end").
    """
    from apache_beam.runners.worker import statesampler
    from apache_beam.utils.counters import CounterFactory

    if getattr(statesampler.StateSampler, "prompt_stop", False):
        return

    class PromptStateSampler(statesampler.StateSampler):
        prompt_stop = True

        def __init__(self, prefix: str, counter_factory: CounterFactory,
                     sampling_period_ms: int = STATE_SAMPLING_PERIOD_MS) -> None:
            super().__init__(prefix, counter_factory, sampling_period_ms)

    statesampler.StateSampler = PromptStateSampler
