"""The KGC term of a batch's loss (method section 4, stage 1): base negatives, scores, loss, penalty.

A :class:`~dhns_search.training.terms.LossTerm`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dhns_search.config.models import RunConfig
from dhns_search.training.losses import kgc_loss, regularization_loss
from dhns_search.training.negatives import make_negative_sampler
from dhns_search.training.terms import BatchPosition, check_finite

__all__ = ["KGCTerm"]


class KGCTerm:
    """``L_KGC`` on negatives from the configured sampler, plus the weighted regulariser.

    Randomness (the base negatives) comes from ``rng``, the CPU generator the trainer also shuffles with.
    """

    def __init__(self, cfg: RunConfig, dataset, rng: torch.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.sampler = make_negative_sampler(cfg.negatives, dataset.train, dataset.num_entities, dataset.num_relations)

    def __call__(self, model: nn.Module, batch: torch.Tensor, at: BatchPosition) -> tuple[torch.Tensor, dict[str, float]]:
        neg = self.sampler.sample(batch.cpu(), at.global_batch, self.rng).to(batch.device)  # [B, K, 3]
        pos_score, neg_score = model.score_batch(batch, neg)  # [B], [B, K]: the known side composed once
        loss = kgc_loss(pos_score, neg_score, self.cfg.loss)
        if self.cfg.loss.regularizer != "none" and self.cfg.loss.reg_weight > 0:
            loss = loss + self.cfg.loss.reg_weight * regularization_loss(model, self.cfg.loss)
        check_finite(loss, "the KGC loss", at)
        return loss, {"kgc_loss": loss.item()}

    def state_dict(self) -> dict[str, Any]:
        return {}  # the sampler is a function of the data; its randomness is the trainer's rng

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
