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
US_PER_S = 1_000_000


def to_us(seconds: float) -> int:
    """Epoch seconds as whole microseconds, the resolution times are stored at (TIMESTAMPTZ).

    Rounds half to even on the fraction, as ``datetime.fromtimestamp`` does when a point is
    written, so ``to_us`` of a stored time's float is exactly the stored integer. The split into
    whole seconds and fraction keeps the product exact for any representable time.
    """
    whole = math.floor(seconds)
    return int(whole) * US_PER_S + round((seconds - whole) * US_PER_S)


def from_us(us: int) -> float:
    """Whole microseconds as epoch seconds (correctly rounded: ``to_us(from_us(us)) == us``)."""
    return us / US_PER_S
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
        if self.cadence_us < 1 or self.horizon_us < 1:
            raise ValueError(f"cadence_s and horizon_s must be at least 1 µs: {self.cadence_s}, {self.horizon_s}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0: {self.top_k}")

    @property
    def cadence_us(self) -> int:
        """The grid step in whole µs: grid points are its exact multiples."""
        return to_us(self.cadence_s)

    @property
    def horizon_us(self) -> int:
        """H in whole µs, as the membership rule compares it."""
        return to_us(self.horizon_s)


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


def grid_ceil_us(ts_us: int, cadence_us: int) -> int:
    """The first epoch-aligned grid point at or after ts_us, all in whole µs (exact)."""
    return -(-ts_us // cadence_us) * cadence_us


def grid_ceil(ts_s: float, cadence_s: float) -> float:
    """The first epoch-aligned grid point at or after ts_s: ``grid_ceil_us`` on whole µs."""
    return from_us(grid_ceil_us(to_us(ts_s), to_us(cadence_s)))


def in_horizon_us(item_ts_us: int, as_of_us: int, horizon_us: int) -> bool:
    """THE membership rule, t - H < t_i <= t, in integer µs as times are stored: every form
    (batch, incremental, the SQL macro's ``epoch_us`` comparison) applies exactly this."""
    return as_of_us - horizon_us < item_ts_us <= as_of_us


def in_horizon(item_ts_s: float, as_of_s: float, horizon_s: float) -> bool:
    """``in_horizon_us`` on seconds: each time is taken to whole µs first (``to_us``)."""
    return in_horizon_us(to_us(item_ts_s), to_us(as_of_s), to_us(horizon_s))


def grid_points_us(item_ts_us: Sequence[int], cadence_us: int, horizon_us: int) -> list[int]:
    """As-of times of one ticker in whole µs: multiples of cadence_us from ceil(first) to
    ceil(last) whose horizon (``in_horizon_us``) holds an item.

    Logits shift equally with t, so S only changes when an item arrives or expires; the grid
    just fixes when it is observed.
    """
    if not item_ts_us:
        return []
    ordered = sorted(item_ts_us)
    k = -(-ordered[0] // cadence_us)
    k_last = -(-ordered[-1] // cadence_us)
    points: list[int] = []
    newest = 0  # index just past the newest item with ts <= t
    while k <= k_last:
        t = k * cadence_us
        while newest < len(ordered) and ordered[newest] <= t:
            newest += 1
        if newest and in_horizon_us(ordered[newest - 1], t, horizon_us):
            points.append(t)
            k += 1
        elif newest == len(ordered):  # horizon shorter than a cadence step: nothing left
            break
        else:  # empty horizon: jump to the bucket of the next item
            k = -(-ordered[newest] // cadence_us)
    return points


def grid_points(item_ts_s: Sequence[float], cadence_s: float, horizon_s: float) -> list[float]:
    """``grid_points_us`` on seconds: the as-of times as floats of exact µs."""
    return [from_us(t) for t in grid_points_us([to_us(t) for t in item_ts_s], to_us(cadence_s),
                                               to_us(horizon_s))]
