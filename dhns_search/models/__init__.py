"""KGE models: stateless scorers, multimodal entity representations, and the KGC model."""

from dhns_search.models.entities import FeatureSource, MultimodalEntities
from dhns_search.models.kge import REGULARIZERS, KGEModel
from dhns_search.models.scorers import (
    SCORERS,
    ComplExScorer,
    DistMultScorer,
    RotatEScorer,
    Scorer,
    TransEScorer,
    make_scorer,
)

__all__ = [
    "REGULARIZERS",
    "SCORERS",
    "ComplExScorer",
    "DistMultScorer",
    "FeatureSource",
    "KGEModel",
    "MultimodalEntities",
    "RotatEScorer",
    "Scorer",
    "TransEScorer",
    "make_scorer",
]
