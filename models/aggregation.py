"""Recency-weighted aggregation attention: the public API (docs/aggregation.md).

S_k(t) = sum_i softmax_i(r_i - ln2 (t - t_i) / h) s_i over ticker k's items with t - H < t_i <= t.
Three forms agree to 1e-6: ``aggregate_series``/``aggregate_tickers`` (batch, torch; backfills),
``TickerState`` (incremental; the streaming job) and the DuckDB macro in
``connectors.duckdb.sentiment_macro`` (trend queries with any half-life after the fact).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from models.aggregation_attention import RecencyAttention, horizon_pairs, top_k_pairs
from models.aggregation_config import (DEFAULT_RELEVANCE, LN2, US_PER_S, AggregationConfig,
                                       RelevanceConfig, SentimentPoint, grid_points, grid_points_us,
                                       relevance)
from models.aggregation_incremental import TickerState

__all__ = ["AggregationConfig", "RelevanceConfig", "DEFAULT_RELEVANCE", "relevance",
           "SentimentPoint", "grid_points", "aggregate_series", "aggregate_tickers",
           "TickerState", "RecencyAttention"]

ItemRow = tuple[str, float, float, float]  # (item_id, ts_s, score, relevance)

# Padded pairs per forward pass: bounds memory (about 100 bytes per pair) for long horizons.
_MAX_PAIRS_PER_CHUNK = 2_000_000


def aggregate_series(ticker: str, items: Sequence[ItemRow], cfg: AggregationConfig,
                     device: str | torch.device = "cpu") -> list[SentimentPoint]:
    """Every grid point x every half-life of one ticker (see ``aggregate_tickers``)."""
    return aggregate_tickers({ticker: items}, cfg, device)


def aggregate_tickers(items_by_ticker: Mapping[str, Sequence[ItemRow]], cfg: AggregationConfig,
                      device: str | torch.device = "cpu") -> list[SentimentPoint]:
    """Batch form for backfills: all tickers, grid points and half-lives in few segment softmaxes.

    Points come ordered by ticker (input order), as-of time, then half-life (config order).
    """
    batch = _Batch(cfg)
    for ticker, items in items_by_ticker.items():
        batch.add_ticker(ticker, items)
    return batch.run(torch.device(device))


class _Batch:
    """Items of all tickers concatenated (each ticker sorted by time) and the queries over them."""

    def __init__(self, cfg: AggregationConfig) -> None:
        self.cfg = cfg
        self.ids: list[str] = []
        self.ts: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.relevances: list[np.ndarray] = []
        self.ranks: list[np.ndarray] = []  # [half-lives, items]: order by (-kappa, item_id)
        self.query_ticker: list[str] = []
        self.query_ts: list[np.ndarray] = []
        self.query_lo: list[np.ndarray] = []
        self.query_hi: list[np.ndarray] = []
        self.n_items = 0

    def add_ticker(self, ticker: str, items: Sequence[ItemRow]) -> None:
        if not items:
            return
        ids = [item[0] for item in items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"ticker {ticker!r}: duplicate item ids")
        values = np.array([item[1:] for item in items], dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"ticker {ticker!r}: ts, score and relevance must be finite")
        order = sorted(range(len(items)), key=lambda i: (values[i, 0], ids[i]))
        ids = [ids[i] for i in order]
        ts, score, rel = values[order].T
        id_rank = np.empty(len(ids), dtype=np.int64)
        id_rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
        offset = ts - ts[0]
        ranks = np.empty((len(self.cfg.half_lives_s), len(ids)), dtype=np.int64)
        for row, h in enumerate(self.cfg.half_lives_s):
            kappa = rel + (LN2 / h) * offset  # bit-identical to TickerState's ranking key
            ranks[row, np.lexsort((id_rank, -kappa))] = np.arange(len(ids))
        # membership in whole µs, as stored and as in_horizon_us: t - H < t_i <= t
        ts_us = _to_us(ts)
        grid_us = np.array(grid_points_us(ts_us.tolist(), self.cfg.cadence_us, self.cfg.horizon_us),
                           dtype=np.int64)
        grid = grid_us / US_PER_S
        hi = np.searchsorted(ts_us, grid_us, side="right")
        lo = np.searchsorted(ts_us, grid_us - self.cfg.horizon_us, side="right")
        self.ids.extend(ids)
        self.ts.append(ts)
        self.scores.append(score)
        self.relevances.append(rel)
        self.ranks.append(ranks)
        self.query_ticker.append(ticker)
        self.query_ts.append(grid)
        self.query_lo.append(lo + self.n_items)
        self.query_hi.append(hi + self.n_items)
        self.n_items += len(ids)

    def run(self, device: torch.device) -> list[SentimentPoint]:
        if not self.ids or not sum(len(grid) for grid in self.query_ts):
            return []
        n_h = len(self.cfg.half_lives_s)
        item_ts, item_score, item_rel = (
            torch.from_numpy(np.concatenate(parts)).to(device)
            for parts in (self.ts, self.scores, self.relevances))
        rank = torch.from_numpy(np.concatenate(self.ranks, axis=1)).to(device)
        # queries: for each ticker, each grid point, each half-life (the output order)
        tickers = [ticker for ticker, grid in zip(self.query_ticker, self.query_ts)
                   for _ in range(len(grid) * n_h)]
        query_ts = np.repeat(np.concatenate(self.query_ts), n_h)
        query_h_index = np.tile(np.arange(n_h), len(query_ts) // n_h)
        query_h = np.asarray(self.cfg.half_lives_s, dtype=np.float64)[query_h_index]
        query_lo = np.repeat(np.concatenate(self.query_lo), n_h)
        query_hi = np.repeat(np.concatenate(self.query_hi), n_h)
        module = RecencyAttention().to(device)
        points: list[SentimentPoint] = []
        for start, stop in _chunks(query_hi - query_lo, _MAX_PAIRS_PER_CHUNK):
            on_device = lambda a: torch.from_numpy(a[start:stop]).to(device)  # noqa: E731
            lo, hi, h_index = on_device(query_lo), on_device(query_hi), on_device(query_h_index)
            pair_query, pair_item = horizon_pairs(lo, hi)
            out = module(item_ts, item_score, item_rel, on_device(query_ts), on_device(query_h),
                         pair_query, pair_item)
            tops: list[list[tuple[str, float]]] = [[] for _ in range(stop - start)]
            if self.cfg.top_k:
                chosen, chosen_query = top_k_pairs(
                    pair_query, rank[h_index[pair_query], pair_item], hi - lo, self.cfg.top_k)
                for q, i, w in zip(chosen_query.tolist(), pair_item[chosen].tolist(),
                                   out.weight[chosen].tolist()):
                    tops[q].append((self.ids[i], w))
            columns = zip(tickers[start:stop], query_ts[start:stop].tolist(),
                          query_h[start:stop].tolist(), out.sentiment.tolist(),
                          out.n_items.tolist(), out.ess.tolist(), out.mean_score.tolist(), tops)
            points.extend(SentimentPoint(*row[:-1], tuple(row[-1])) for row in columns)
        return points


def _to_us(ts: np.ndarray) -> np.ndarray:
    """``aggregation_config.to_us`` elementwise (whole seconds + rounded fraction, half to even)."""
    whole = np.floor(ts)
    return whole.astype(np.int64) * US_PER_S + np.round((ts - whole) * US_PER_S).astype(np.int64)


def _chunks(lengths: np.ndarray, max_pairs: int) -> list[tuple[int, int]]:
    """Split consecutive queries into runs whose padded size (count x longest) <= max_pairs."""
    bounds, start, longest = [], 0, 0
    for q, length in enumerate(lengths.tolist()):
        widest = max(longest, length)
        if q > start and (q - start + 1) * widest > max_pairs:
            bounds.append((start, q))
            start, widest = q, length
        longest = widest
    bounds.append((start, len(lengths)))
    return bounds
