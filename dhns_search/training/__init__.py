"""Training: losses, negative samplers, the NTAT loss (and the training loop)."""

from dhns_search.training.loop import Callback, StopTraining, TrainResult, train
from dhns_search.training.losses import kgc_loss, regularization_loss
from dhns_search.training.negatives import (
    BernoulliSampler,
    NegativeSampler,
    UniformSampler,
    make_negative_sampler,
)
from dhns_search.training.ntat import margin_factors, margin_scale, ntat_loss

__all__ = [
    "BernoulliSampler",
    "Callback",
    "NegativeSampler",
    "StopTraining",
    "TrainResult",
    "UniformSampler",
    "kgc_loss",
    "make_negative_sampler",
    "margin_factors",
    "margin_scale",
    "ntat_loss",
    "regularization_loss",
    "train",
]
