"""The shared definitions of the recency-weighted aggregation attention (docs/aggregation.md).

Kept apart from the three implementations (torch module, incremental state, SQL macro) so that
they agree by construction on the settings, the relevance formula, the output row and the grid
of as-of times.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

LN2 = math.log(2.0)
# The one default half-life of every command (pipelines, demo, trend, dashboard).
DEFAULT_HALF_LIFE_S = 3600.0


@dataclass(frozen=True)
class AggregationConfig:
    """Half-lives h (a row each), horizon H, the as-of grid step and the explanation size."""

    half_lives_s: tuple[float, ...] = (DEFAULT_HALF_LIFE_S,)
    horizon_s: float = 3 * 86400.0
    cadence_s: float = 300.0
    top_k: int = 5

    def __post_init__(self) -> None:
        if not self.half_lives_s:
            raise ValueError("half_lives_s must name at least one half-life")
        if any(not (h > 0 and math.isfinite(h)) for h in self.half_lives_s):
            raise ValueError(f"half-lives must be positive and finite: {self.half_lives_s}")
        if len(set(self.half_lives_s)) != len(self.half_lives_s):
            raise ValueError(f"half-lives must be distinct: {self.half_lives_s}")
        if not (self.horizon_s > 0 and math.isfinite(self.horizon_s)):
            raise ValueError(f"horizon_s must be positive and finite: {self.horizon_s}")
        if not (self.cadence_s > 0 and math.isfinite(self.cadence_s)):
            raise ValueError(f"cadence_s must be positive and finite: {self.cadence_s}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0: {self.top_k}")


_DEFAULT_SOURCE_PRIORS = MappingProxyType({"news": 0.0, "comment": -0.5})


@dataclass(frozen=True)
class RelevanceConfig:
    """Terms of the relevance r_i; exp(r_i) multiplies an item's attention weight.

    Defaults: weight proportional to confidence (ln term), comments count exp(-0.5) ~ 0.61 of
    news, an unknown source exp(-0.25) ~ 0.78, and the n-th earlier near-duplicate divides the
    weight by (1+n)^3, so a story syndicated any number of times weighs at most ~1.2 items.
    """

    confidence_weight: float = 1.0
    source_priors: Mapping[str, float] = field(default_factory=lambda: _DEFAULT_SOURCE_PRIORS)
    unknown_source_prior: float = -0.25
    novelty_weight: float = 3.0

    def __post_init__(self) -> None:
        values = [self.confidence_weight, self.unknown_source_prior, self.novelty_weight,
                  *self.source_priors.values()]
        if any(not math.isfinite(v) for v in values):
            raise ValueError("relevance settings must be finite numbers")
        if self.novelty_weight < 0:
            raise ValueError(f"novelty_weight must be >= 0: {self.novelty_weight}")


DEFAULT_RELEVANCE = RelevanceConfig()


def relevance(confidence: float, source: str, novelty_n: int,
              cfg: RelevanceConfig = DEFAULT_RELEVANCE) -> float:
    """r_i = w_c ln(confidence) + prior(source) - w_n ln(1 + novelty_n)."""
    if not (0.0 < confidence <= 1.0):
        raise ValueError(f"confidence must be in (0, 1]: {confidence!r}")
    if novelty_n < 0:
        raise ValueError(f"novelty_n must be >= 0: {novelty_n!r}")
    prior = cfg.source_priors.get(source, cfg.unknown_source_prior)
    return (cfg.confidence_weight * math.log(confidence) + prior
            - cfg.novelty_weight * math.log1p(novelty_n))


@dataclass(frozen=True)
class SentimentPoint:
    """One row of ``ticker_sentiment``: S_k(t) for one ticker, as-of time and half-life."""

    ticker: str
    ts_s: float  # epoch seconds, a point of the cadence grid
    half_life_s: float
    sentiment: float
    n_items: int
    ess: float  # effective sample size 1 / sum(w^2)
    mean_score: float  # unweighted mean of the same items
    top_items: tuple[tuple[str, float], ...]  # (item_id, weight), largest first, ties by id


def grid_ceil(ts_s: float, cadence_s: float) -> float:
    """The first epoch-aligned grid point at or after ts_s (exact when ts_s is on the grid)."""
    k = math.ceil(ts_s / cadence_s)
    if (k - 1) * cadence_s >= ts_s:  # guard against the division rounding up
        k -= 1
    elif k * cadence_s < ts_s:
        k += 1
    return k * cadence_s


def in_horizon(item_ts_s: float, as_of_s: float, horizon_s: float) -> bool:
    """Membership rule t - H < t_i <= t, written once so every form compares identically."""
    return as_of_s - horizon_s < item_ts_s <= as_of_s


def grid_points(item_ts_s: Sequence[float], cadence_s: float, horizon_s: float) -> list[float]:
    """As-of times of one ticker: grid points ceil(first)..ceil(last) with a non-empty horizon.

    Logits shift equally with t, so S only changes when an item arrives or expires; the grid
    just fixes when it is observed.
    """
    if not item_ts_s:
        return []
    ordered = sorted(item_ts_s)
    first, last = grid_ceil(ordered[0], cadence_s), grid_ceil(ordered[-1], cadence_s)
    k_first, k_last = round(first / cadence_s), round(last / cadence_s)
    points: list[float] = []
    newest = 0  # index just past the newest item with ts <= t
    k = k_first
    while k <= k_last:
        t = k * cadence_s
        while newest < len(ordered) and ordered[newest] <= t:
            newest += 1
        if newest and in_horizon(ordered[newest - 1], t, horizon_s):
            points.append(t)
            k += 1
        elif newest == len(ordered):  # horizon shorter than a cadence step: nothing left
            break
        else:  # empty horizon: jump to the bucket of the next item
            k = round(grid_ceil(ordered[newest], cadence_s) / cadence_s)
    return points
