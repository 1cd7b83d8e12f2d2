"""The KGC term of a batch's loss (method section 4, stage 1): base negatives, scores, loss, penalty.

A :class:`~dhns_search.training.terms.LossTerm`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dhns_search.config.models import RunConfig
from dhns_search.training.losses import cross_entropy_all, kgc_loss, regularization_loss
from dhns_search.training.negatives import make_negative_sampler
from dhns_search.training.terms import BatchPosition, check_finite

__all__ = ["KGCTerm"]


class KGCTerm:
    """``L_KGC`` on negatives from the configured sampler, plus the weighted regulariser.

    Randomness (the base negatives) comes from ``rng``, the CPU generator the trainer also shuffles with.
    With ``negatives.sampler: all`` (1vsAll) there is no sampler: each query of the batch is scored against
    every entity and the loss is the softmax cross-entropy of the true one; ``negatives.corrupt`` says which
    queries (``both``: the tail and the head query of every positive; ``alternate``: tail queries on even
    batches, head queries on odd ones, as the sampled path alternates; ``head`` / ``tail``: one side).
    """

    def __init__(self, cfg: RunConfig, dataset, rng: torch.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.sampler = None
        if cfg.negatives.sampler != "all":
            self.sampler = make_negative_sampler(cfg.negatives, dataset.train, dataset.num_entities,
                                                 dataset.num_relations)

    def __call__(self, model: nn.Module, batch: torch.Tensor, at: BatchPosition) -> tuple[torch.Tensor, dict[str, float]]:
        if self.sampler is None:
            loss = self._one_vs_all(model, batch, at)
        else:
            neg = self.sampler.sample(batch.cpu(), at.global_batch, self.rng).to(batch.device)  # [B, K, 3]
            pos_score, neg_score = model.score_batch(batch, neg)  # [B], [B, K]: the known side composed once
            loss = kgc_loss(pos_score, neg_score, self.cfg.loss)
        if self.cfg.loss.regularizer == "n3" and self.cfg.loss.reg_weight > 0:
            loss = loss + self.cfg.loss.reg_weight * model.batch_regularization(batch)
        elif self.cfg.loss.regularizer != "none" and self.cfg.loss.reg_weight > 0:
            loss = loss + self.cfg.loss.reg_weight * regularization_loss(model, self.cfg.loss)
        check_finite(loss, "the KGC loss", at)
        return loss, {"kgc_loss": loss.item()}

    def _one_vs_all(self, model: nn.Module, batch: torch.Tensor, at: BatchPosition) -> torch.Tensor:
        """batch: [B, 3] -> the mean cross-entropy of the true entity over all entities, per query side."""
        h, r, t = batch.unbind(-1)
        corrupt, smoothing = self.cfg.negatives.corrupt, self.cfg.loss.label_smoothing
        tails = corrupt in ("both", "tail") or (corrupt == "alternate" and at.global_batch % 2 == 0)
        heads = corrupt in ("both", "head") or (corrupt == "alternate" and at.global_batch % 2 == 1)
        parts = []
        ent = model.entities.all_fused()  # fused once for both sides (with fusion: every feature projected)
        if tails:
            parts.append(cross_entropy_all(model.score_tails(h, r, ent), t, label_smoothing=smoothing))
        if heads:
            parts.append(cross_entropy_all(model.score_heads(r, t, ent), h, label_smoothing=smoothing))
        return parts[0] if len(parts) == 1 else (parts[0] + parts[1]) / 2

    def state_dict(self) -> dict[str, Any]:
        return {}  # the sampler is a function of the data; its randomness is the trainer's rng

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
