"""Losses of base KGC training (method section 1): scores of positives against their negatives.

All losses take ``pos`` [B] positive scores and ``neg`` [B, K] scores of each positive's K negatives
(higher = more plausible) and return a scalar to minimise.

* ``self_adversarial`` (RotatE; the released code's SigmoidLoss with temperature alpha)::

      L = -1/2 [ mean_b log sigmoid(p_b) + mean_b sum_j softmax(alpha * n_b)_j log sigmoid(-n_bj) ]

  The softmax weights are detached, as in RotatE's code: they pick which negatives count, they are not
  trained.  ``alpha = 0`` gives uniform weights, i.e. the plain mean over negatives.
* ``margin_ranking``: ``mean_{b,j} relu(margin - p_b + n_bj)``.
* ``softplus``: ``mean_b softplus(-p_b) + mean_{b,j} softplus(n_bj)`` (the logistic loss).
* ``cross_entropy``: ``mean_b -log softmax([p_b, n_b1, ..., n_bK])_0`` (sampled softmax), with optional
  label smoothing.  With ``negatives.sampler: all`` (1vsAll) the trainer calls
  :func:`cross_entropy_all` instead, over the scores of every entity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dhns_search.config.models import LossConfig
from dhns_search.errors import ConfigError

__all__ = [
    "LOSSES",
    "cross_entropy_all",
    "cross_entropy_loss",
    "kgc_loss",
    "margin_ranking_loss",
    "regularization_loss",
    "self_adversarial_loss",
    "softplus_loss",
]


def _check(pos: torch.Tensor, neg: torch.Tensor) -> None:
    if pos.dim() != 1 or neg.dim() != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(f"expected pos [B] and neg [B, K], got {tuple(pos.shape)} and {tuple(neg.shape)}")


def self_adversarial_loss(pos: torch.Tensor, neg: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """pos: [B] positive scores, neg: [B, K] negative scores -> scalar self-adversarial sigmoid loss."""
    _check(pos, neg)
    weights = torch.softmax(temperature * neg, dim=-1).detach()
    neg_term = (weights * F.logsigmoid(-neg)).sum(dim=-1).mean()
    return -0.5 * (F.logsigmoid(pos).mean() + neg_term)


def margin_ranking_loss(pos: torch.Tensor, neg: torch.Tensor, *, margin: float) -> torch.Tensor:
    """pos: [B] positive scores, neg: [B, K] negative scores -> scalar mean hinge loss."""
    _check(pos, neg)
    return F.relu(margin - pos.unsqueeze(-1) + neg).mean()


def softplus_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """pos: [B] positive scores, neg: [B, K] negative scores -> scalar logistic (softplus) loss."""
    _check(pos, neg)
    return F.softplus(-pos).mean() + F.softplus(neg).mean()


def cross_entropy_loss(pos: torch.Tensor, neg: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """pos: [B] positive scores, neg: [B, K] negative scores -> scalar softmax cross-entropy of the positive
    among its K + 1 candidates."""
    _check(pos, neg)
    logits = torch.cat((pos.unsqueeze(-1), neg), dim=-1)
    return F.cross_entropy(logits, logits.new_zeros(pos.shape[0], dtype=torch.long), label_smoothing=label_smoothing)


def cross_entropy_all(scores: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """scores: [B, N] scores of every entity for B queries, target: [B] the true entity of each -> scalar
    mean softmax cross-entropy (1vsAll; other true answers of a query count as negatives, as in LibKGE)."""
    if scores.dim() != 2 or target.shape != scores.shape[:1]:
        raise ValueError(f"expected scores [B, N] and target [B], got {tuple(scores.shape)} and {tuple(target.shape)}")
    return F.cross_entropy(scores, target, label_smoothing=label_smoothing)


#: registry: ``loss.kind`` -> function of (pos, neg, cfg)
LOSSES = {
    "self_adversarial": lambda pos, neg, cfg: self_adversarial_loss(
        pos, neg, temperature=cfg.adv_temperature
    ),
    "margin_ranking": lambda pos, neg, cfg: margin_ranking_loss(pos, neg, margin=cfg.margin),
    "softplus": lambda pos, neg, cfg: softplus_loss(pos, neg),
    "cross_entropy": lambda pos, neg, cfg: cross_entropy_loss(pos, neg, label_smoothing=cfg.label_smoothing),
}


def kgc_loss(pos: torch.Tensor, neg: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """pos: [B] positive scores, neg: [B, K] negative scores -> scalar loss of kind ``cfg.kind``."""
    try:
        fn = LOSSES[cfg.kind]
    except KeyError:
        raise ConfigError(f"loss.kind: unknown loss {cfg.kind!r}; choose one of {sorted(LOSSES)}") from None
    return fn(pos, neg, cfg)


def regularization_loss(model, cfg: LossConfig) -> torch.Tensor:
    """The penalty ``cfg.regularizer`` of ``model`` (a :class:`dhns_search.models.KGEModel`), **unweighted**.

    The caller multiplies by ``cfg.reg_weight`` (the training loop does), so the weight is applied once.
    ``"none"`` gives a zero tensor.
    """
    return model.regularization(cfg.regularizer)
