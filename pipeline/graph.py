"""The stage sequence of every graph, defined once: parse, tickers, dedupe, novelty, score,
relevance, then aggregate and write.

Three stages take a form that depends on the run, given by its :class:`Mode`: bounded (the
backfill: dedupe and novelty group by key, aggregation is a batch over all items, one writer
takes everything at the end) or unbounded (the stream: per-process state, points folded and
written with their items at each bundle's end, pipeline/stream_transforms.py). The scale-out
splits the sequence at the scores (docs/architecture.md, "Scale-out"): scoring workers run
``parse_and_link`` then ``Score``; the store runs ``land`` without scoring over what they
published. Labels are the same in every graph.
"""
from __future__ import annotations

from typing import Protocol

import apache_beam as beam

from pipeline.scoring import SentimentModelHandler
from pipeline.tickers import Linking
from pipeline.transforms import DEAD, ExtractTickers, Parse, Relevance, Score


class Mode(Protocol):
    """The forms of the stages that differ between a bounded and an unbounded run."""

    def dedupe(self) -> beam.PTransform:
        """Items -> one item per id (the repeats are this mode's to count or acknowledge)."""

    def novelty(self) -> beam.PTransform:
        """Items -> items with ``novelty_n``: earlier items with the same text key in the horizon."""

    def write(self, items: beam.PCollection, dead_letters: dict[str, beam.PCollection]) -> None:
        """Aggregate the relevant items per ticker; write items, points and dead letters (by stage)."""


def parse_and_link(records: beam.PCollection, links: Linking) -> tuple[beam.PCollection, beam.PCollection]:
    """RawRecord -> (items with their tickers, parse dead letters)."""
    parsed = records | "Parse" >> Parse()
    return parsed.items | "Extract tickers" >> ExtractTickers(links), parsed[DEAD]


def land(items: beam.PCollection, mode: Mode, handler: SentimentModelHandler | None = None,
         dead_letters: dict[str, beam.PCollection] | None = None) -> None:
    """Items -> one per id -> novelty -> scores (when ``handler``; the store's are scored) ->
    relevance -> aggregated and written with ``dead_letters`` and the scoring's own."""
    dead_letters = dict(dead_letters or {})
    unique = items | "Drop repeated ids" >> mode.dedupe()
    novel = unique | "Novelty" >> mode.novelty()
    if handler is not None:
        scored = novel | "Score" >> Score(handler)
        novel, dead_letters["score"] = scored["items"], scored[DEAD]
    mode.write(novel | "Relevance" >> Relevance(), dead_letters)


def sentiment_graph(records: beam.PCollection, links: Linking, mode: Mode, handler: SentimentModelHandler) -> None:
    """The whole sequence, from raw records to rows (the backfill and the single-process stream)."""
    items, parse_dead = parse_and_link(records, links)
    land(items, mode, handler, {"parse": parse_dead})
