"""The KGC model: multimodal entities + a relation table + a stateless scorer.

:class:`KGEModel` scores triples given by id (training), ranks one side against every entity
(:class:`dhns_search.evaluation.RankingModel`), and exposes the pieces DHNS needs to score generated
vectors: ``model.entities`` (modality vectors, fusion), ``model.relation(ids)`` and ``model.scorer``.

Initialisation follows RotatE's code: ``init_range = (gamma + epsilon) / dim``; entity (structural) and
relation vectors start uniform in ``(-init_range, init_range)``, except RotatE phases, which start uniform
in ``(-pi, pi)`` (the released code draws them in the init range and rescales them to radians, which is
the same distribution).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from dhns_search.config.models import ModelConfig
from dhns_search.errors import ConfigError
from dhns_search.models.entities import FeatureSource, MultimodalEntities
from dhns_search.models.scorers import make_scorer

if TYPE_CHECKING:  # the data layer is imported only for typing
    from dhns_search.config.models import RunConfig

__all__ = ["REGULARIZERS", "KGEModel"]

#: names accepted by :meth:`KGEModel.regularization`
REGULARIZERS = ("none", "l2", "l3")


class KGEModel(nn.Module):
    """Entities, relations and a scorer; satisfies :class:`dhns_search.evaluation.RankingModel`.

    Args:
        num_entities: number of entities N.
        num_relations: number of relations R.
        model_cfg: scorer, dimension, gamma/epsilon (init range), fusion, feature mode, normalisation.
        features: modality name -> feature table (``values`` [N, fw], ``mask`` [N]); None or {} = structural only.
    """

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        model_cfg: ModelConfig,
        features: Mapping[str, FeatureSource] | None = None,
    ) -> None:
        super().__init__()
        if num_relations < 1:
            raise ValueError(f"num_relations must be >= 1, got {num_relations}")
        self.config = model_cfg
        self.scorer = make_scorer(model_cfg.scorer, gamma=model_cfg.gamma)
        self.dim = model_cfg.dim
        self.init_range = (model_cfg.gamma + model_cfg.epsilon) / model_cfg.dim
        self.entities = MultimodalEntities(
            num_entities,
            self.scorer.entity_width(model_cfg.dim),
            features,
            fusion=model_cfg.fusion,
            feature_mode=model_cfg.feature_mode,
            missing=model_cfg.missing,
            normalize=model_cfg.normalize_entities,
            init_range=self.init_range,
        )
        rel = torch.empty(num_relations, self.scorer.relation_width(model_cfg.dim))
        if self.scorer.phase_relations:
            rel.uniform_(-math.pi, math.pi)
        else:
            rel.uniform_(-self.init_range, self.init_range)
        self.relations = nn.Parameter(rel)

    @classmethod
    def from_config(cls, cfg: RunConfig, dataset) -> KGEModel:
        """The model of ``cfg.model`` for ``dataset`` (a :class:`dhns_search.data.KGDataset`)."""
        return cls(dataset.num_entities, dataset.num_relations, cfg.model, dataset.features)

    @property
    def num_entities(self) -> int:
        return self.entities.num_entities

    @property
    def num_relations(self) -> int:
        return self.relations.shape[0]

    # ------------------------------------------------------------------ lookups
    def relation(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [...] relation ids -> [..., wr] relation vectors."""
        return self.relations[ids]

    def entity(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [...] entity ids -> [..., we] fused entity vectors."""
        return self.entities(ids)

    # ------------------------------------------------------------------ scoring
    def score_triples(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Scores of triples given by id.

        Args:
            h: [...] head ids.
            r: [...] relation ids.
            t: [...] tail ids.  The three shapes broadcast (e.g. h, r [B, 1] and t [B, K]).

        Returns:
            [...] scores (the broadcast shape), higher = more plausible.

        Each distinct entity is embedded (and fused) once, however often it occurs in ``h`` and ``t``.
        """
        ids, inverse = torch.unique(torch.cat((h.reshape(-1), t.reshape(-1))), return_inverse=True)
        emb = self.entities(ids)
        n_h = h.numel()
        h_emb = emb[inverse[:n_h]].reshape(*h.shape, emb.shape[-1])
        t_emb = emb[inverse[n_h:]].reshape(*t.shape, emb.shape[-1])
        return self.scorer.score(h_emb, self.relations[r], t_emb)

    def score_tails(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """h: [B] head ids, r: [B] relation ids -> [B, N] scores of (h, r, e) for every entity e."""
        ent = self.entities.all_fused()
        return self.scorer.score_all_tails(ent[h], self.relations[r], ent)

    def score_heads(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """r: [B] relation ids, t: [B] tail ids -> [B, N] scores of (e, r, t) for every entity e."""
        ent = self.entities.all_fused()
        return self.scorer.score_all_heads(self.relations[r], ent[t], ent)

    # ------------------------------------------------------------------ regularisation
    def regularization(self, kind: str) -> torch.Tensor:
        """Scalar penalty over the full structural entity table and the full relation table.

        ``l3``: ``sum |x|^3`` (the released code's ``||E||_3^3 + ||R||_3^3``); ``l2``: ``sum x^2`` over the same
        tensors; ``none``: 0.  Unweighted: the caller applies ``loss.reg_weight``.

        Not penalised: projection weights, raw feature rows, missing vectors and the attention vector (the
        released code does not penalise them either), and RotatE's relation *phases*: a penalty on angles
        is not periodic and would only pull every relation towards the identity rotation.
        """
        if kind not in REGULARIZERS:
            raise ConfigError(
                f"loss.regularizer: unknown regularizer {kind!r}; choose one of {list(REGULARIZERS)}"
            )
        if kind == "none":
            return self.relations.new_zeros(())
        tables = [self.entities.structural]
        if not self.scorer.phase_relations:
            tables.append(self.relations)
        power = 2 if kind == "l2" else 3
        return sum(t.abs().pow(power).sum() for t in tables)

    def extra_repr(self) -> str:
        return f"scorer={self.scorer!r}, dim={self.dim}, num_relations={self.num_relations}"
