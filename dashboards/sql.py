"""Trend SQL over the schema (docs/sql.md): volume, breakdown by source, trend, movers, shocks,
and the dashboard's all-ticker sentiment grid and why panel (``sentiment_grid``, ``why_items``,
docs/dashboard.md), computed in numpy from one join over the view's window (``window_rows``).

All macros are TEMP: they live in the connection, not the file, so they install on a read-only
connection to a live database or a snapshot, and they follow the code rather than whichever
version last wrote the file. The recency-weighted sentiment itself is the aggregation's
``sentiment_asof`` macro (connectors.duckdb.sentiment_macro); these build series on top of it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
WHERE n_trailing >= greatest(3, trailing_n / 2)  -- true division: ceil(trailing_n / 2) points for odd trailing_n
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

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.sentiment, self.horizon_items, self.n_items, self.n_positive,
                                      self.n_neutral, self.n_negative, self.mean_score))

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


LABEL_CODES = ("negative", "neutral", "positive")  # WindowRows.label: the index; 3 for any other label
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Each link of an item with event time in (after, until] to a ticker: the columns the grid and the
# why panel need, the label as a small code and the item's rowid instead of its text (why_items).
_WINDOW_ROWS = """
SELECT t.ticker, epoch_us(i.ts) AS ts_us, i.score, i.relevance,
       CAST(CASE i.label WHEN 'negative' THEN 0 WHEN 'neutral' THEN 1 WHEN 'positive' THEN 2 ELSE 3 END
            AS TINYINT) AS label,
       i.rowid AS item_row
FROM items AS i JOIN item_tickers AS t ON t.item_id = i.id
WHERE i.ts > $after::TIMESTAMPTZ AND i.ts <= $until::TIMESTAMPTZ
  AND ($sources::VARCHAR[] IS NULL OR list_contains($sources::VARCHAR[], i.source))
"""


def epoch_us(ts: datetime) -> int:
    """Microseconds since the epoch, exactly (DuckDB's ``epoch_us``)."""
    return (ts - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class WindowRows:
    """The (item, ticker) links of the items in (after, until] of some sources, as numpy columns."""

    after: datetime
    until: datetime
    sources: tuple[str, ...] | None
    tickers: list[str]              # sorted; ``ticker`` indexes it
    ticker: np.ndarray              # int64
    ts_us: np.ndarray               # int64 epoch microseconds
    score: np.ndarray
    relevance: np.ndarray
    label: np.ndarray               # index into LABEL_CODES, 3 for any other label
    item_row: np.ndarray            # items.rowid (valid for the file these rows were read from)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ticker, self.ts_us, self.score, self.relevance, self.label, self.item_row))


def window_rows(con: duckdb.DuckDBPyConnection, after: datetime, until: datetime,
                sources: list[str] | tuple[str, ...] | None = None) -> WindowRows:
    """One join of ``items`` with ``item_tickers`` over (after, until], fetched as Arrow columns.

    Aggregating these in numpy (``grid_from_rows``) was measured cheaper than DuckDB's GROUP BY
    over (ticker, bucket), whose ~40k groups cost more than the join (docs/performance.md).
    """
    sources = tuple(sources) if sources is not None else None
    table = con.sql(_WINDOW_ROWS, params={"after": after, "until": until,
                                          "sources": list(sources) if sources is not None else None}).to_arrow_table()
    encoded = pc.dictionary_encode(table["ticker"]).combine_chunks()
    names = encoded.dictionary.to_pylist()
    order = np.argsort(np.array(names, dtype=object)) if names else np.zeros(0, np.int64)
    rank = np.empty(len(names), np.int64)
    rank[order] = np.arange(len(names))
    return WindowRows(after=after, until=until, sources=sources, tickers=[names[k] for k in order],
                      ticker=rank[encoded.indices.to_numpy(zero_copy_only=False)],
                      ts_us=table["ts_us"].to_numpy(), score=table["score"].to_numpy(),
                      relevance=table["relevance"].to_numpy(), label=table["label"].to_numpy(),
                      item_row=table["item_row"].to_numpy())


def grid_window(until: datetime, n_points: int, step_s: int,
                horizon_s: float = DEFAULT_HORIZON_S) -> tuple[datetime, datetime]:
    """The (after, until] whose items a ``sentiment_grid`` of these points reads."""
    if step_s <= 0 or horizon_s % step_s:
        raise ValueError(f"the horizon ({horizon_s} s) must be a whole number of steps ({step_s} s)")
    width = n_points - 1 + int(horizon_s // step_s)  # buckets from the first point's horizon to until
    return until - timedelta(seconds=width * step_s), until


def sentiment_grid(con: duckdb.DuckDBPyConnection, until: datetime, n_points: int, step_s: int,
                   half_life_s: float, tickers: list[str] | None = None, sources: list[str] | None = None,
                   horizon_s: float = DEFAULT_HORIZON_S) -> SentimentGrid:
    """``sentiment_series`` at until - k * step (k < n_points) for many tickers, by bucket sums."""
    after, _ = grid_window(until, n_points, step_s, horizon_s)
    return grid_from_rows(window_rows(con, after, until, sources), n_points, step_s, half_life_s, tickers, horizon_s)


def grid_from_rows(rows: WindowRows, n_points: int, step_s: int, half_life_s: float,
                   tickers: list[str] | None = None, horizon_s: float = DEFAULT_HORIZON_S) -> SentimentGrid:
    """The grid of ``sentiment_grid`` from the rows of exactly its ``grid_window``.

    The horizon must be a whole number of steps: a horizon is then a run of buckets, and S(t)
    is a ratio of sums over that run of e = exp(r + ln 2 (ts - ref) / h) and e * score (the same
    items, hence the same value, as ``sentiment_series``; tests/dashboards/test_sql.py). The
    reference time ref cancels in every ratio; it is mid-range, so the exponents stay within
    +-ln 2 * (range / 2h) + |r| (finite for a 10-day range at h = 15 min).
    """
    until = rows.until
    after, _ = grid_window(until, n_points, step_s, horizon_s)
    if after != rows.after:
        raise ValueError(f"rows of ({rows.after}, {until}] given for the grid window ({after}, {until}]")
    per_horizon = int(horizon_s // step_s)
    width = n_points - 1 + per_horizon
    ref_us = epoch_us(until - timedelta(seconds=width * step_s / 2))
    step_us = int(round(step_s * 1e6))
    if tickers is None:
        names, code, keep = rows.tickers, rows.ticker, slice(None)
    else:
        names = list(tickers)
        index = {name: n for n, name in enumerate(names)}
        lookup = np.array([index.get(name, -1) for name in rows.tickers] or [-1], np.int64)
        code = lookup[rows.ticker] if len(rows.ticker) else rows.ticker
        keep = code >= 0
        code = code[keep]
    ts_us, score, relevance = rows.ts_us[keep], rows.score[keep], rows.relevance[keep]
    cell = code * width + (width - 1) - (epoch_us(until) - ts_us) // step_us  # until's bucket: the last column
    size = len(names) * width

    def dense(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(cell, weights, minlength=size).astype(float).reshape(len(names), width)

    def per_point(matrix: np.ndarray) -> np.ndarray:  # sum over each point's horizon of buckets
        return sliding_window_view(matrix, per_horizon, axis=1).sum(axis=2)

    e = np.exp(relevance + np.log(2) * ((ts_us - ref_us) / 1e6) / half_life_s)
    n, den, num, total = dense(), dense(e), dense(e * score), dense(score)
    labels = np.bincount(cell * 4 + rows.label[keep], minlength=size * 4).reshape(len(names), width, 4)
    horizon_items = per_point(n)
    last = slice(per_horizon - 1, width)
    with np.errstate(invalid="ignore", divide="ignore"):
        sentiment = np.where(horizon_items > 0, per_point(num) / per_point(den), np.nan)
        mean_score = np.where(n[:, last] > 0, total[:, last] / n[:, last], np.nan)
    return SentimentGrid(
        tickers=names, as_of=[until - timedelta(seconds=(n_points - 1 - p) * step_s) for p in range(n_points)],
        step_s=step_s, sentiment=sentiment, horizon_items=horizon_items.astype(np.int64),
        n_items=n[:, last].astype(np.int64), n_positive=labels[:, last, 2], n_neutral=labels[:, last, 1],
        n_negative=labels[:, last, 0], mean_score=mean_score)


_WHY_DETAILS = """
SELECT i.rowid AS item_row, i.id AS item_id, i.ts, i.source, i.label, i.score, i.confidence, i.text, i.url
FROM items AS i WHERE i.rowid IN (SELECT unnest($rows::BIGINT[]))
"""
_WHY_LINKS = "SELECT item_id, link FROM item_tickers WHERE ticker = $ticker AND list_contains($ids, item_id)"


def why_items(con: duckdb.DuckDBPyConnection, rows: WindowRows, ticker: str, half_life_s: float,
              top_n: int = 10, horizon_s: float = DEFAULT_HORIZON_S) -> list[dict]:
    """The ``why`` macro's rows for ``ticker`` as of ``rows.until``, from rows that cover its horizon.

    The same items (the ticker's, in (until - horizon, until]), the same logits and order (largest
    logit first, then item id) and weights e / sum(e) (shifted by the largest logit instead of the
    macro's bound: equal to ~1e-15, tests/dashboards/test_sql.py); only the top items' details
    are read back from the file, by rowid.
    """
    until_us = epoch_us(rows.until)
    horizon_us = int(round(horizon_s * 1e6))
    if epoch_us(rows.after) > until_us - horizon_us:
        raise ValueError("the rows do not cover the horizon")
    code = rows.tickers.index(ticker) if ticker in rows.tickers else -1
    mine = (rows.ticker == code) & (rows.ts_us > until_us - horizon_us)
    if not mine.any():
        return []
    logit = rows.relevance[mine] - np.log(2) * ((until_us - rows.ts_us[mine]) / 1e6) / half_life_s
    weight = np.exp(logit - logit.max())
    weight /= weight.sum()
    # every item tied with the top_n-th largest logit is a candidate: the item id breaks ties
    candidates = (np.nonzero(logit >= np.partition(logit, -top_n)[-top_n])[0] if len(logit) > top_n
                  else np.arange(len(logit)))
    item_rows = rows.item_row[mine][candidates].tolist()
    columns = ["item_row", "item_id", "ts", "source", "label", "score", "confidence", "text", "url"]
    details = {row[0]: dict(zip(columns, row))
               for row in con.sql(_WHY_DETAILS, params={"rows": item_rows}).fetchall()}
    ranked = sorted((-logit[c], details[r]["item_id"], c, r) for c, r in zip(candidates, item_rows))[:top_n]
    links = dict(con.sql(_WHY_LINKS, params={"ticker": ticker,
                                             "ids": [item_id for _, item_id, _, _ in ranked]}).fetchall())
    found = []
    for rank, (_, item_id, c, r) in enumerate(ranked, start=1):
        row = details[r]
        found.append({"rank": rank, "item_id": item_id, "weight": float(weight[c]), "ts": row["ts"],
                      "source": row["source"], "label": row["label"], "score": row["score"],
                      "confidence": row["confidence"], "text": row["text"], "url": row["url"],
                      "link": links.get(item_id)})
    return found


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
        hit = ((n_trailing >= max(3, SHOCK_TRAILING_N / 2)) & (grid.n_items >= SHOCK_MIN_ITEMS)
               & (baseline_items >= SHOCK_MIN_BASELINE_ITEMS) & (np.abs(z) > SHOCK_K))
    found = [{"ticker": grid.tickers[t], "ts": grid.as_of[p], "sentiment": float(grid.sentiment[t, p]),
              "trailing_mean": float(mean[t, p]), "z": float(z[t, p]), "n_items": int(grid.n_items[t, p]),
              "baseline_items": int(baseline_items[t, p])} for t, p in zip(*np.nonzero(hit))]
    return sorted(found, key=lambda s: (-s["ts"].timestamp(), -abs(s["z"]), s["ticker"]))
