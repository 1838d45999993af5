"""The stage sequences of the streaming graphs, each defined once.

The single-process stream is ``parse_and_link`` then ``land``; the scale-out splits it at the
scores (docs/architecture.md, "Scale-out"): scoring workers run ``parse_and_link`` then ``Score``
and publish, the store runs ``land`` without scoring over what they published. Labels are those
of the stream's graph, so its transform names are the same in every shape.
"""
from __future__ import annotations

from collections.abc import Callable

import apache_beam as beam

from pipeline.run_handle import RunHandle
from pipeline.scoring import SentimentModelHandler
from pipeline.stream_transforms import (DUPLICATE, DropRepeatedIds, StreamNovelty, StreamRecencyAttention, StreamRun,
                                        WriteStream)
from pipeline.tickers import Linking
from pipeline.transforms import DEAD, ExtractTickers, Parse, Relevance, Score


def parse_and_link(records: beam.PCollection, links: Linking) -> tuple[beam.PCollection, beam.PCollection]:
    """RawRecord -> (items with their tickers, parse dead letters)."""
    parsed = records | "Parse" >> Parse()
    return parsed.items | "Extract tickers" >> ExtractTickers(links), parsed[DEAD]


def land(items: beam.PCollection, handle: RunHandle[StreamRun], handler: SentimentModelHandler | None = None,
         aggregate: Callable[[beam.PCollection], object] | None = None) -> beam.PCollection | None:
    """Items -> one per id -> novelty -> scores (when ``handler``; the store's are scored) ->
    relevance -> ``aggregate`` (default: fold into the run's state, write with the points).
    Repeated ids are acknowledged, not stored. Returns the score dead letters (None: no scoring)."""
    unique = items | "Drop repeated ids" >> DropRepeatedIds(handle)
    _ = unique[DUPLICATE] | "Acknowledge duplicates" >> WriteStream(handle, DUPLICATE)
    novel = unique.items | "Novelty" >> StreamNovelty(handle)
    dead = None
    if handler is not None:
        scored = novel | "Score" >> Score(handler)
        novel, dead = scored["items"], scored[DEAD]
    relevant = novel | "Relevance" >> Relevance()
    if aggregate is None:
        _ = relevant | "Aggregate and write" >> StreamRecencyAttention(handle)
    else:
        aggregate(relevant)
    return dead
