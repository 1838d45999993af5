"""Vectorized recency attention: one segment softmax over many (ticker, as-of, half-life) queries.

Every query attends to a contiguous run of its ticker's items (those in its horizon), so the
whole batch is one flat list of (query, item) pairs: one gather, one segment max, one exp and
three segment sums, on CPU or CUDA. float64 throughout: the backfill must match the streaming
and SQL forms to 1e-6.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from models.aggregation_config import LN2


class AttentionOutput(NamedTuple):
    weight: torch.Tensor  # [P] softmax weight of each pair within its query
    sentiment: torch.Tensor  # [Q] S = sum w s
    ess: torch.Tensor  # [Q] 1 / sum w^2
    n_items: torch.Tensor  # [Q] int64
    mean_score: torch.Tensor  # [Q] unweighted mean


class RecencyAttention(nn.Module):
    """w_i = softmax_i(r_i - ln2 (t - t_i) / h) per query; S = sum w_i s_i.

    Parameter-free: the relevance r_i (including any learned head) is computed upstream.
    Stable for any ages and counts: each query's logits are shifted by their own maximum, so
    the largest term is exp(0) = 1 and the denominator never underflows.
    """

    def forward(self, item_ts: torch.Tensor, item_score: torch.Tensor,
                item_relevance: torch.Tensor, query_ts: torch.Tensor,
                query_half_life: torch.Tensor, pair_query: torch.Tensor,
                pair_item: torch.Tensor) -> AttentionOutput:
        n_queries = query_ts.shape[0]
        age = query_ts[pair_query] - item_ts[pair_item]
        logit = item_relevance[pair_item] - LN2 * age / query_half_life[pair_query]
        shift = torch.full((n_queries,), -torch.inf, dtype=logit.dtype, device=logit.device)
        shift = shift.scatter_reduce(0, pair_query, logit, reduce="amax", include_self=True)
        unnormalised = torch.exp(logit - shift[pair_query])
        score = item_score[pair_item]
        denominator = _segment_sum(unnormalised, pair_query, n_queries)
        numerator = _segment_sum(unnormalised * score, pair_query, n_queries)
        square_sum = _segment_sum(unnormalised * unnormalised, pair_query, n_queries)
        n_items = torch.bincount(pair_query, minlength=n_queries)
        score_sum = _segment_sum(score, pair_query, n_queries)
        return AttentionOutput(
            weight=unnormalised / denominator[pair_query],
            sentiment=numerator / denominator,
            ess=denominator * denominator / square_sum,
            n_items=n_items,
            mean_score=score_sum / n_items.to(score_sum.dtype),
        )


def _segment_sum(values: torch.Tensor, segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    return torch.zeros(n_segments, dtype=values.dtype, device=values.device).index_add_(
        0, segment, values)


def horizon_pairs(query_lo: torch.Tensor,
                  query_hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten query q's item range [lo_q, hi_q) into (pair_query, pair_item), grouped by query."""
    lengths = query_hi - query_lo
    pair_query = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device),
                                         lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    pair_item = (torch.arange(pair_query.shape[0], device=lengths.device)
                 - starts[pair_query] + query_lo[pair_query])
    return pair_query, pair_item


def top_k_pairs(pair_query: torch.Tensor, pair_rank: torch.Tensor,
                lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k pairs of each query with the smallest rank (rank = order by weight desc, then id).

    Pairs are grouped by query (``horizon_pairs``), ``lengths`` counts them per query. Ranks
    are laid out in a [queries, longest] matrix padded with +inf and reduced with one topk;
    ranks are unique per query, so there are no ties to break. Returns (pair index, query
    index) of the chosen pairs, grouped by query, best first.
    """
    n_queries, longest = lengths.shape[0], int(lengths.max().item())
    starts = torch.cumsum(lengths, 0) - lengths
    position = torch.arange(pair_query.shape[0], device=pair_query.device) - starts[pair_query]
    dense = torch.full((n_queries, longest), torch.iinfo(torch.int64).max, dtype=torch.int64,
                       device=pair_query.device)
    dense[pair_query, position] = pair_rank
    _, column = torch.topk(dense, min(k, longest), dim=1, largest=False, sorted=True)
    query = torch.arange(n_queries, device=pair_query.device).unsqueeze(1).expand_as(column)
    keep = column < lengths.unsqueeze(1)
    return (starts.unsqueeze(1) + column)[keep], query[keep]
