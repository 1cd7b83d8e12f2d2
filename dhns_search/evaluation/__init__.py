"""Filtered link-prediction evaluation (optimistic, pessimistic and realistic ranks).

See :mod:`dhns_search.evaluation.ranking` for the protocol and the metric definitions.
"""

from dhns_search.evaluation.index import FilterIndex, build_filter_indexes
from dhns_search.evaluation.ranking import (
    HITS_AT,
    METRICS,
    POLICIES,
    DirectionRanks,
    FilteredEvaluator,
    RankingModel,
    Ranks,
    filtered_ranks,
    metrics_from_ranks,
)

__all__ = [
    "HITS_AT",
    "METRICS",
    "POLICIES",
    "DirectionRanks",
    "FilterIndex",
    "FilteredEvaluator",
    "RankingModel",
    "Ranks",
    "build_filter_indexes",
    "filtered_ranks",
    "metrics_from_ranks",
]
