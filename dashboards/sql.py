"""Trend SQL over the schema (docs/sql.md): volume, breakdown by source, trend, movers, shocks.

All macros are TEMP: they live in the connection, not the file, so they install on a read-only
connection to a live database or a snapshot, and they follow the code rather than whichever
version last wrote the file. The recency-weighted sentiment itself is the aggregation's
``sentiment_asof`` macro (connectors.duckdb.sentiment_macro); these build series on top of it.
"""
from __future__ import annotations

from datetime import datetime

import duckdb

from connectors.duckdb.sentiment_macro import install_sentiment_macro

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

-- Shocks: points of the recency-weighted series more than k standard deviations away from the
-- trailing level (mean of the previous `trailing_n` points; the deviation is floored at min_std).
CREATE OR REPLACE TEMP MACRO shocks(since, until, bucket_s, half_life_s,
                                    k := 3.0, trailing_n := 12, min_std := 0.02) AS TABLE
WITH points AS (
    SELECT ticker, ts, sentiment,
           avg(sentiment) OVER trailing_window AS trailing_mean,
           stddev_samp(sentiment) OVER trailing_window AS trailing_std,
           count(*) OVER trailing_window AS n_trailing
    FROM sentiment_series(NULL, since, until, bucket_s, half_life_s)
    WINDOW trailing_window AS (PARTITION BY ticker ORDER BY ts
                               ROWS BETWEEN trailing_n PRECEDING AND 1 PRECEDING)
)
SELECT ticker, ts, sentiment, trailing_mean, trailing_std,
       (sentiment - trailing_mean) / greatest(trailing_std, min_std) AS z
FROM points
WHERE n_trailing >= greatest(3, trailing_n // 2)
  AND abs(sentiment - trailing_mean) > k * greatest(trailing_std, min_std)
ORDER BY ts DESC, abs(z) DESC, ticker;

-- Why: the items carrying a ticker's sentiment as of a time, largest attention weight first.
CREATE OR REPLACE TEMP MACRO why(for_ticker, as_of, half_life_s, top_n := 10) AS TABLE
WITH top AS (
    SELECT unnest(top_items) AS top, generate_subscripts(top_items, 1) AS rank
    FROM sentiment_asof(for_ticker, as_of, half_life_s, top_k := top_n)
)
SELECT top.rank, i.id AS item_id, top.top.weight AS weight, i.ts, i.source, i.label, i.score,
       i.confidence, i.text, i.url
FROM top JOIN items AS i ON i.id = top.top.item_id
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
    con.execute(MACROS)


def trend_series(con: duckdb.DuckDBPyConnection, ticker: str, since: datetime, until: datetime,
                 bucket_s: float, half_life_s: float) -> tuple[list[str], list[tuple]]:
    """The ``trend`` macro's columns and rows for one ticker (parameterised)."""
    result = con.execute("SELECT * FROM trend(?, ?, ?, ?, ?)", [ticker, since, until, bucket_s, half_life_s])
    return [d[0] for d in result.description], result.fetchall()
