"""DuckDB table macros for the recency attention, so trend queries can pick h after the fact.

``sentiment_series(tickers, start_at, stop_at, step_s, half_life_s[, horizon_s, top_k, sources])``:
S_k(t) for each ticker (NULL = all) at start_at, start_at + step, ... <= stop_at, from the items
of the listed sources (NULL = all).
``sentiment_asof(ticker, as_of, half_life_s[, horizon_s, top_k, sources])``: one ticker, one as-of time.

Both read ``items`` + ``item_tickers`` and return the columns of ``ticker_sentiment`` (ticker,
ts, half_life_s, sentiment, n_items, ess, mean_score, top_items); an empty horizon gives no row.
Same formula as models/aggregation.py (docs/aggregation.md), with times compared in integer
microseconds. Each (ticker, as-of) group's logits are shifted by an upper bound found without
a window over the pairs: the ticker's largest relevance minus the decay of its newest item (an
ASOF join). Every term is then <= 1 and the newest is >= exp(-(spread of relevance)), so
nothing overflows or underflows while one ticker's relevances span less than ~700 (weights
within a factor 1e300); results match the torch and streaming forms to 1e-6.
"""
from __future__ import annotations

import duckdb

DEFAULT_HORIZON_S = 3 * 86400.0
DEFAULT_TOP_K = 5

_SERIES = """
CREATE OR REPLACE {kind} MACRO sentiment_series(tickers, start_at, stop_at, step_s, half_life_s,
                                          horizon_s := {horizon}, top_k := {top_k}, sources := NULL)
AS TABLE
WITH grid AS (
    SELECT epoch_us(as_of) AS as_of_us
    FROM (SELECT unnest(generate_series(start_at::TIMESTAMPTZ, stop_at::TIMESTAMPTZ,
                                        to_microseconds(CAST(round(step_s * 1e6) AS BIGINT))))
          AS as_of)
), tagged AS (
    SELECT t.ticker, i.id, epoch_us(i.ts) AS ts_us, i.score, i.relevance
    FROM items i JOIN item_tickers t ON t.item_id = i.id
    WHERE (tickers IS NULL OR list_contains(tickers, t.ticker))
      AND (sources IS NULL OR list_contains(sources, i.source))
      -- only items some as-of time can see: lets the scan skip row groups by their ts range
      AND i.ts <= stop_at::TIMESTAMPTZ
      AND i.ts > start_at::TIMESTAMPTZ - to_microseconds(CAST(round(horizon_s * 1e6) AS BIGINT))
), newest AS (
    -- per ticker and as-of time: the newest item at or before it (ASOF) and the ticker's top r
    SELECT q.ticker, q.as_of_us, q.max_relevance, n.ts_us AS newest_us
    FROM (SELECT k.ticker, k.max_relevance, g.as_of_us
          FROM (SELECT ticker, max(relevance) AS max_relevance FROM tagged GROUP BY ticker) k
          CROSS JOIN grid g) q
    ASOF JOIN tagged n ON n.ticker = q.ticker AND n.ts_us <= q.as_of_us
), shifts AS (
    -- an upper bound of every logit of the group, reached within the relevance spread
    SELECT ticker, as_of_us,
           max_relevance - ln(2) * ((as_of_us - newest_us) / 1e6) / half_life_s AS shift
    FROM newest
), pairs AS (
    SELECT p.ticker, s.as_of_us, p.id, p.score, s.shift,
           p.relevance - ln(2) * ((s.as_of_us - p.ts_us) / 1e6) / half_life_s AS logit
    FROM tagged p JOIN shifts s
      ON p.ticker = s.ticker
     AND p.ts_us <= s.as_of_us
     AND p.ts_us > s.as_of_us - CAST(round(horizon_s * 1e6) AS BIGINT)
), shifted AS (
    SELECT ticker, as_of_us, id, score, logit, exp(logit - shift) AS e FROM pairs
), folded AS (
    SELECT ticker, as_of_us,
           sum(e) AS den, sum(e * score) AS num, sum(e * e) AS sq,
           count(*) AS n, avg(score) AS mean_score,
           -- rank by logit, not by e: weights that underflow to 0 keep their true order
           min_by({{'item_id': id, 'e': e}}, {{'neg_logit': -logit, 'item_id': id}}, top_k)
               AS top_raw
    FROM shifted
    GROUP BY ticker, as_of_us
)
SELECT ticker,
       TIMESTAMPTZ '1970-01-01 00:00:00+00' + to_microseconds(as_of_us) AS ts,
       CAST(half_life_s AS DOUBLE) AS half_life_s,
       num / den AS sentiment,
       CAST(n AS INTEGER) AS n_items,
       den * den / sq AS ess,
       mean_score,
       CAST(list_transform(top_raw, lambda x: {{'item_id': x.item_id, 'weight': x.e / den}})
            AS STRUCT(item_id VARCHAR, weight DOUBLE)[]) AS top_items
FROM folded
ORDER BY ticker, as_of_us
"""

_ASOF = """
CREATE OR REPLACE {kind} MACRO sentiment_asof(ticker, as_of, half_life_s,
                                        horizon_s := {horizon}, top_k := {top_k}, sources := NULL)
AS TABLE
SELECT * FROM sentiment_series([ticker], as_of, as_of, 1, half_life_s,
                               horizon_s := horizon_s, top_k := top_k, sources := sources)
"""


def install_sentiment_macro(con: duckdb.DuckDBPyConnection, persist: bool = False) -> None:
    """Create the macros on this connection.

    TEMP by default so that read-only connections (dashboards, snapshots) can install them;
    ``persist=True`` stores them in the database file for users of the plain duckdb CLI.
    """
    kind = "" if persist else "TEMP"
    for template in (_SERIES, _ASOF):
        con.execute(template.format(kind=kind, horizon=DEFAULT_HORIZON_S, top_k=DEFAULT_TOP_K))
