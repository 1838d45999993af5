"""Trend SQL over the schema (docs/sql.md): volume, breakdown by source, trend, movers, shocks,
and the dashboard's all-ticker sentiment grid (``sentiment_grid``, docs/dashboard.md).

All macros are TEMP: they live in the connection, not the file, so they install on a read-only
connection to a live database or a snapshot, and they follow the code rather than whichever
version last wrote the file. The recency-weighted sentiment itself is the aggregation's
``sentiment_asof`` macro (connectors.duckdb.sentiment_macro); these build series on top of it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view

from connectors.duckdb.sentiment_macro import DEFAULT_HORIZON_S, install_sentiment_macro

# The shock rule (docs/dashboard.md, "Shocks"; the ``shocks`` macro's defaults and ``grid_shocks``):
# a point of the recency-weighted series is a shock when it is more than SHOCK_K deviations away
# from the mean of the points of the previous SHOCK_TRAILING_N buckets, the deviation floored at
# SHOCK_MIN_STD, AND enough items support it: at least SHOCK_MIN_ITEMS in its own bucket and
# SHOCK_MIN_BASELINE_ITEMS in the trailing buckets.
SHOCK_K = 3.0
SHOCK_TRAILING_N = 12
SHOCK_MIN_STD = 0.05
SHOCK_MIN_ITEMS = 5
SHOCK_MIN_BASELINE_ITEMS = 30

MACROS = """
-- Seconds (a DOUBLE) as an INTERVAL, rounded to the microsecond exactly as sentiment_series does.
CREATE OR REPLACE TEMP MACRO seconds_interval(s) AS to_microseconds(CAST(round(s * 1e6) AS BIGINT));

-- Items with one row per ticker they mention, event time in [since, until).
CREATE OR REPLACE TEMP MACRO ticker_items(since, until) AS TABLE
SELECT t.ticker, i.*
FROM items AS i JOIN item_tickers AS t ON t.item_id = i.id
WHERE i.ts >= since::TIMESTAMPTZ AND i.ts < until::TIMESTAMPTZ;

-- Volume: items per ticker and time bucket, by label, with the plain mean score.
CREATE OR REPLACE TEMP MACRO volume(since, until, bucket_s) AS TABLE
SELECT ticker,
       time_bucket(seconds_interval(bucket_s), ts) AS bucket,
       count(*) AS n_items,
       count(*) FILTER (WHERE label = 'positive') AS n_positive,
       count(*) FILTER (WHERE label = 'neutral') AS n_neutral,
       count(*) FILTER (WHERE label = 'negative') AS n_negative,
       avg(score) AS mean_score
FROM ticker_items(since, until)
GROUP BY ALL
ORDER BY ticker, bucket;

-- Breakdown by source: how much each source says about a ticker, and in which tone.
CREATE OR REPLACE TEMP MACRO by_source(since, until) AS TABLE
SELECT ticker,
       source,
       count(*) AS n_items,
       count(*) / sum(count(*)) OVER (PARTITION BY ticker) AS share,
       avg(score) AS mean_score,
       avg(confidence) AS mean_confidence
FROM ticker_items(since, until)
GROUP BY ticker, source
ORDER BY ticker, n_items DESC, source;

-- Trend of one ticker: per bucket [bucket, bucket + width) the items in it and their plain
-- mean, and the recency-weighted sentiment as of the bucket's end (or `until`, if earlier).
CREATE OR REPLACE TEMP MACRO trend(for_ticker, since, until, bucket_s, half_life_s) AS TABLE
WITH grid AS (
    SELECT bucket, least(bucket + seconds_interval(bucket_s), until::TIMESTAMPTZ) AS as_of
    FROM (SELECT unnest(generate_series(time_bucket(seconds_interval(bucket_s), since::TIMESTAMPTZ),
                                        until::TIMESTAMPTZ, seconds_interval(bucket_s))) AS bucket)
    WHERE bucket < until::TIMESTAMPTZ
), recency AS (  -- the grid's bucket ends, and `until` when it is off the grid
    SELECT DISTINCT ON (ts) ts, sentiment, ess, n_items, mean_score
    FROM (SELECT * FROM sentiment_series([for_ticker],
                                         time_bucket(seconds_interval(bucket_s), since::TIMESTAMPTZ)
                                           + seconds_interval(bucket_s),
                                         until, bucket_s, half_life_s)
          UNION ALL
          SELECT * FROM sentiment_asof(for_ticker, until, half_life_s))
    ORDER BY ts
), counts AS (
    SELECT time_bucket(seconds_interval(bucket_s), i.ts) AS bucket,
           count(*) AS n_items,
           count(*) FILTER (WHERE i.label = 'positive') AS n_positive,
           count(*) FILTER (WHERE i.label = 'neutral') AS n_neutral,
           count(*) FILTER (WHERE i.label = 'negative') AS n_negative,
           avg(i.score) AS mean_score
    FROM items AS i JOIN item_tickers AS t ON t.item_id = i.id
    WHERE t.ticker = for_ticker
      AND i.ts >= time_bucket(seconds_interval(bucket_s), since::TIMESTAMPTZ) AND i.ts <= until::TIMESTAMPTZ
    GROUP BY ALL
)
SELECT g.bucket, g.as_of,
       coalesce(c.n_items, 0) AS n_items,
       coalesce(c.n_positive, 0) AS n_positive,
       coalesce(c.n_neutral, 0) AS n_neutral,
       coalesce(c.n_negative, 0) AS n_negative,
       c.mean_score,
       r.sentiment,
       r.mean_score AS horizon_mean,
       r.n_items AS horizon_items,
       r.ess
FROM grid AS g
LEFT JOIN counts AS c ON c.bucket = g.bucket
LEFT JOIN recency AS r ON r.ts = g.as_of
ORDER BY g.bucket;

-- Movers: tickers whose recency-weighted sentiment changed most over the period before as_of.
CREATE OR REPLACE TEMP MACRO movers(as_of, period_s, half_life_s, top_n := 10) AS TABLE
WITH points AS (
    SELECT ticker, ts, sentiment, n_items
    FROM sentiment_series(NULL, as_of::TIMESTAMPTZ - seconds_interval(period_s), as_of, period_s, half_life_s)
), fresh AS (
    SELECT ticker, count(*) AS n_new
    FROM ticker_items(as_of::TIMESTAMPTZ - seconds_interval(period_s) + INTERVAL 1 MICROSECOND,
                      as_of::TIMESTAMPTZ + INTERVAL 1 MICROSECOND)  -- (as_of - period, as_of]
    GROUP BY ticker
)
SELECT now_.ticker,
       before.sentiment AS sentiment_before,
       now_.sentiment AS sentiment_now,
       now_.sentiment - before.sentiment AS change,
       coalesce(fresh.n_new, 0) AS n_new
FROM points AS now_
JOIN points AS before ON before.ticker = now_.ticker AND before.ts < now_.ts
LEFT JOIN fresh ON fresh.ticker = now_.ticker
WHERE now_.ts = as_of::TIMESTAMPTZ
ORDER BY abs(change) DESC, now_.ticker
LIMIT top_n;

-- Shocks (the rule of docs/dashboard.md, defaults SHOCK_* below): points of the recency-weighted
-- series more than k deviations away from the trailing level (the points of the previous
-- `trailing_n` buckets; the deviation floored at min_std), with at least min_items items in their
-- own bucket (ts - bucket_s, ts] and min_baseline_items in the trailing buckets.
CREATE OR REPLACE TEMP MACRO shocks(since, until, bucket_s, half_life_s,
                                    k := $k, trailing_n := $trailing_n, min_std := $min_std,
                                    min_items := $min_items, min_baseline_items := $min_baseline_items,
                                    sources := NULL) AS TABLE
WITH series AS (
    SELECT ticker, ts, sentiment
    FROM sentiment_series(NULL, since, until, bucket_s, half_life_s, sources := sources)
), counted AS (
    SELECT s.ticker, s.ts, s.sentiment, count(i.id) AS n_items
    FROM series AS s
    LEFT JOIN (items AS i JOIN item_tickers AS t ON t.item_id = i.id)
      ON t.ticker = s.ticker AND i.ts <= s.ts AND i.ts > s.ts - seconds_interval(bucket_s)
     AND (sources IS NULL OR list_contains(sources, i.source))
    GROUP BY ALL
), points AS (
    SELECT *,
           avg(sentiment) OVER trailing_window AS trailing_mean,
           stddev_samp(sentiment) OVER trailing_window AS trailing_std,
           count(*) OVER trailing_window AS n_trailing,
           coalesce(sum(n_items) OVER trailing_window, 0) AS baseline_items
    FROM counted
    WINDOW trailing_window AS (PARTITION BY ticker ORDER BY ts
                               RANGE BETWEEN seconds_interval(trailing_n * bucket_s) PRECEDING
                                         AND seconds_interval(bucket_s) PRECEDING)
)
SELECT ticker, ts, sentiment, trailing_mean, trailing_std,
       (sentiment - trailing_mean) / greatest(trailing_std, min_std) AS z,
       n_items, CAST(baseline_items AS BIGINT) AS baseline_items
FROM points
WHERE n_trailing >= greatest(3, trailing_n // 2)
  AND n_items >= min_items AND baseline_items >= min_baseline_items
  AND abs(sentiment - trailing_mean) > k * greatest(trailing_std, min_std)
ORDER BY ts DESC, abs(z) DESC, ticker;

-- Why: the items carrying a ticker's sentiment as of a time, largest attention weight first.
CREATE OR REPLACE TEMP MACRO why(for_ticker, as_of, half_life_s, top_n := 10, sources := NULL) AS TABLE
WITH top AS (
    SELECT unnest(top_items) AS top, generate_subscripts(top_items, 1) AS rank
    FROM sentiment_asof(for_ticker, as_of, half_life_s, top_k := top_n, sources := sources)
)
SELECT top.rank, i.id AS item_id, top.top.weight AS weight, i.ts, i.source, i.label, i.score,
       i.confidence, i.text, i.url, t.link
FROM top JOIN items AS i ON i.id = top.top.item_id
LEFT JOIN item_tickers AS t ON t.item_id = i.id AND t.ticker = for_ticker
ORDER BY top.rank;

-- Bucket sums behind sentiment_grid (Python, below): per ticker and bucket index j <= 0, the
-- items in (until + (j - 1) * step, until + j * step] with e = exp(r + ln 2 (ts - ref) / h).
-- The reference time ref cancels in every ratio; the caller puts it mid-range so e stays finite.
CREATE OR REPLACE TEMP MACRO grid_cells(tickers, sources, after, until, step_s, half_life_s, ref) AS TABLE
SELECT t.ticker,
       -((epoch_us(until::TIMESTAMPTZ) - epoch_us(i.ts)) // CAST(round(step_s * 1e6) AS BIGINT)) AS j,
       count(*) AS n,
       sum(exp(i.relevance + ln(2) * ((epoch_us(i.ts) - epoch_us(ref::TIMESTAMPTZ)) / 1e6) / half_life_s)) AS den,
       sum(i.score * exp(i.relevance + ln(2) * ((epoch_us(i.ts) - epoch_us(ref::TIMESTAMPTZ)) / 1e6)
                                        / half_life_s)) AS num,
       sum(i.score) AS total,
       count(*) FILTER (WHERE i.label = 'positive') AS n_positive,
       count(*) FILTER (WHERE i.label = 'neutral') AS n_neutral,
       count(*) FILTER (WHERE i.label = 'negative') AS n_negative
FROM items AS i JOIN item_tickers AS t ON t.item_id = i.id
WHERE i.ts > after::TIMESTAMPTZ AND i.ts <= until::TIMESTAMPTZ
  AND (tickers IS NULL OR list_contains(tickers, t.ticker))
  AND (sources IS NULL OR list_contains(sources, i.source))
GROUP BY ALL;

-- Dead letters by stage and reason: what was refused, how often, when last.
CREATE OR REPLACE TEMP MACRO dead_letter_summary() AS TABLE
SELECT stage, reason, count(*) AS n, max(seen_at) AS last_seen
FROM dead_letters
GROUP BY ALL
ORDER BY n DESC, stage, reason;
"""


def install_trend_sql(con: duckdb.DuckDBPyConnection) -> None:
    """Install ``sentiment_asof`` and every trend macro on ``con`` (read-only is fine)."""
    con.execute("SET TimeZone = 'UTC'")
    install_sentiment_macro(con)
    con.execute(MACROS.replace("$k", repr(SHOCK_K)).replace("$trailing_n", str(SHOCK_TRAILING_N))
                .replace("$min_std", repr(SHOCK_MIN_STD)).replace("$min_items", str(SHOCK_MIN_ITEMS))
                .replace("$min_baseline_items", str(SHOCK_MIN_BASELINE_ITEMS)))


def trend_series(con: duckdb.DuckDBPyConnection, ticker: str, since: datetime, until: datetime,
                 bucket_s: float, half_life_s: float) -> tuple[list[str], list[tuple]]:
    """The ``trend`` macro's columns and rows for one ticker (parameterised)."""
    result = con.execute("SELECT * FROM trend(?, ?, ?, ?, ?)", [ticker, since, until, bucket_s, half_life_s])
    return [d[0] for d in result.description], result.fetchall()


@dataclass(frozen=True)
class SentimentGrid:
    """Per ticker (rows) and as-of time (columns): S(t), items in the horizon and in the bucket."""

    tickers: list[str]
    as_of: list[datetime]           # until - (n - 1) * step, ..., until
    step_s: int
    sentiment: np.ndarray           # NaN where nothing is inside the horizon
    horizon_items: np.ndarray
    n_items: np.ndarray             # items in the bucket (as_of - step, as_of]
    n_positive: np.ndarray
    n_neutral: np.ndarray
    n_negative: np.ndarray
    mean_score: np.ndarray          # plain mean of the bucket's items; NaN when empty

    def table(self, decimals: int = 6) -> pa.Table:
        """One row per (ticker, as-of), ticker by ticker, values to ``decimals``: what the CSV export writes."""
        n_tickers, n_points = self.sentiment.shape
        # ISO-8601 text, made once per column of the grid: Arrow's CSV writer formats zoned timestamps slowly
        as_of = np.array([t.isoformat() for t in self.as_of], dtype=object)
        bucket = np.array([(t - timedelta(seconds=self.step_s)).isoformat() for t in self.as_of], dtype=object)

        def flat(values: np.ndarray) -> pa.Array:
            values = values.ravel()
            if values.dtype.kind != "f":
                return pa.array(values)
            return pa.array(values.round(decimals), mask=np.isnan(values))
        return pa.table({
            "ticker": pa.array(np.repeat(np.array(self.tickers, dtype=object), n_points), pa.string()),
            "bucket": pa.array(np.tile(bucket, n_tickers), pa.string()),
            "as_of": pa.array(np.tile(as_of, n_tickers), pa.string()),
            "sentiment": flat(self.sentiment), "horizon_items": flat(self.horizon_items),
            "n_items": flat(self.n_items), "n_positive": flat(self.n_positive), "n_neutral": flat(self.n_neutral),
            "n_negative": flat(self.n_negative), "mean_score": flat(self.mean_score)})


def sentiment_grid(con: duckdb.DuckDBPyConnection, until: datetime, n_points: int, step_s: int,
                   half_life_s: float, tickers: list[str] | None = None, sources: list[str] | None = None,
                   horizon_s: float = DEFAULT_HORIZON_S) -> SentimentGrid:
    """``sentiment_series`` at until - k * step (k < n_points) for many tickers, by bucket sums.

    The horizon must be a whole number of steps: a horizon is then a run of buckets, and S(t)
    is a ratio of sums over that run (the same items, hence the same value, as
    ``sentiment_series``; tests/dashboards/test_sql.py). The reference time is mid-range, so the
    exponents stay within +-ln 2 * (range / 2h) + |r| (finite for a 10-day range at h = 15 min).
    """
    if step_s <= 0 or horizon_s % step_s:
        raise ValueError(f"the horizon ({horizon_s} s) must be a whole number of steps ({step_s} s)")
    per_horizon = int(horizon_s // step_s)
    width = n_points - 1 + per_horizon  # buckets from the first point's horizon to until
    after = until - timedelta(seconds=width * step_s)
    ref = until - timedelta(seconds=width * step_s / 2)
    cells = con.execute("SELECT * FROM grid_cells(?, ?, ?, ?, ?, ?, ?)",
                        [tickers, sources, after, until, step_s, half_life_s, ref]).fetchnumpy()
    names = sorted(set(cells["ticker"].tolist())) if tickers is None else list(tickers)
    index = {name: n for n, name in enumerate(names)}
    rows = np.array([index[name] for name in cells["ticker"].tolist()], dtype=np.int64)
    cell = rows * width + np.asarray(cells["j"], dtype=np.int64) + width - 1  # j = 0 (until): the last column

    def dense(values) -> np.ndarray:  # one cell per (ticker, bucket): GROUP BY made them unique
        out = np.zeros(len(names) * width)
        out[cell] = np.asarray(values, dtype=float)
        return out.reshape(len(names), width)

    def per_point(matrix: np.ndarray) -> np.ndarray:  # sum over each point's horizon of buckets
        return sliding_window_view(matrix, per_horizon, axis=1).sum(axis=2)

    n, den, num = dense(cells["n"]), dense(cells["den"]), dense(cells["num"])
    horizon_items = per_point(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        sentiment = np.where(horizon_items > 0, per_point(num) / per_point(den), np.nan)
        last = slice(per_horizon - 1, width)
        mean_score = np.where(n[:, last] > 0, dense(cells["total"])[:, last] / n[:, last], np.nan)
    return SentimentGrid(
        tickers=names, as_of=[until - timedelta(seconds=(n_points - 1 - p) * step_s) for p in range(n_points)],
        step_s=step_s, sentiment=sentiment, horizon_items=horizon_items.astype(np.int64),
        n_items=n[:, last].astype(np.int64), n_positive=dense(cells["n_positive"])[:, last].astype(np.int64),
        n_neutral=dense(cells["n_neutral"])[:, last].astype(np.int64),
        n_negative=dense(cells["n_negative"])[:, last].astype(np.int64), mean_score=mean_score)


def grid_shocks(grid: SentimentGrid) -> list[dict]:
    """Points that pass the shock rule (SHOCK_* above), newest first, then by |z|."""
    n_tickers, n_points = grid.sentiment.shape
    trailing = sliding_window_view(
        np.hstack([np.full((n_tickers, SHOCK_TRAILING_N), np.nan), grid.sentiment]), SHOCK_TRAILING_N, axis=1)[:, :n_points]
    baseline_items = sliding_window_view(
        np.hstack([np.zeros((n_tickers, SHOCK_TRAILING_N), np.int64), grid.n_items]), SHOCK_TRAILING_N, axis=1
    )[:, :n_points].sum(axis=2)
    n_trailing = (~np.isnan(trailing)).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: masked out below
        mean = np.nanmean(trailing, axis=2)
        std = np.fmax(np.nanstd(trailing, axis=2, ddof=1), SHOCK_MIN_STD)
        z = (grid.sentiment - mean) / std
        hit = ((n_trailing >= max(3, SHOCK_TRAILING_N // 2)) & (grid.n_items >= SHOCK_MIN_ITEMS)
               & (baseline_items >= SHOCK_MIN_BASELINE_ITEMS) & (np.abs(z) > SHOCK_K))
    found = [{"ticker": grid.tickers[t], "ts": grid.as_of[p], "sentiment": float(grid.sentiment[t, p]),
              "trailing_mean": float(mean[t, p]), "z": float(z[t, p]), "n_items": int(grid.n_items[t, p]),
              "baseline_items": int(baseline_items[t, p])} for t, p in zip(*np.nonzero(hit))]
    return sorted(found, key=lambda s: (-s["ts"].timestamp(), -abs(s["z"]), s["ticker"]))
