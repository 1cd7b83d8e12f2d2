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
from dhns_search.models.candidates import unique_ids
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

    #: score base negatives by composing the known side once (:meth:`score_batch`); False scores every
    #: negative triple as :meth:`score_triples` does (the plain path, kept for tests and benchmarks)
    candidate_scoring: bool = True

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
        self._num_relations = num_relations
        #: reciprocal models keep an inverse relation r + R for every relation r (head queries use it)
        self.reciprocal = bool(getattr(model_cfg, "reciprocal", False))
        rel = torch.empty(num_relations * (2 if self.reciprocal else 1), self.scorer.relation_width(model_cfg.dim))
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
        """R, the data's relations (a reciprocal model also holds R inverse relations)."""
        return self._num_relations

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
        ids, inverse = unique_ids(torch.cat((h.reshape(-1), t.reshape(-1))), self.num_entities)
        emb = self.entities(ids)
        n_h = h.numel()
        h_emb = emb[inverse[:n_h]].reshape(*h.shape, emb.shape[-1])
        t_emb = emb[inverse[n_h:]].reshape(*t.shape, emb.shape[-1])
        return self.scorer.score(h_emb, self.relations[r], t_emb)

    def score_batch(self, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of a batch of positives and of their corrupted triples, as ``score_triples`` gives them.

        Args:
            pos: [B, 3] positive (h, r, t) ids.
            neg: [B, K, 3] corrupted triples: each keeps its positive's relation and one of its sides (what
                the negative samplers return).

        Returns:
            (pos_scores [B], neg_scores [B, K]).

        The known side is composed with the relation once per positive (both sides when a batch mixes
        head and tail corruption) and the K candidates are scored against it by
        :meth:`~dhns_search.models.scorers.Scorer.score_candidates`: a sampled matrix product for bilinear
        scorers, a broadcast for the others.  Every entity of the batch is embedded once
        (:meth:`_embed_once`).  Negatives that do not keep a side of their positive fall back to
        :meth:`score_triples`.
        """
        heads = _corrupted_heads(pos, neg) if self.candidate_scoring else None
        if heads is None:
            return self.score_triples(*pos.unbind(-1)), self.score_triples(*neg.unbind(-1))
        b, scorer = pos.shape[0], self.scorer
        h, r, t = pos.unbind(-1)
        cand = torch.where(heads, neg[..., 0], neg[..., 2])
        table, slots = self._embed_once(torch.cat((h, t, cand.reshape(-1))))
        known = table[slots[: 2 * b]]  # one gather (one table-sized gradient buffer) for heads and tails
        e_h, e_t, rel = known[:b], known[b:], self.relations[r]
        cand = slots[2 * b :].view_as(cand)
        any_head, all_head = bool(heads.any()), bool(heads.all())
        q_tail = None if all_head else scorer.compose(e_h, rel, "tail")
        q_head = None if not any_head else scorer.compose(e_t, rel, "head")
        if q_tail is None:  # a head-corrupted batch (alternate, head)
            return scorer.similarity(q_head, e_h), scorer.score_candidates(q_head, table, cand)
        pos_score = scorer.similarity(q_tail, e_t)
        if q_head is None:  # a tail-corrupted batch (alternate, tail)
            return pos_score, scorer.score_candidates(q_tail, table, cand)
        q = torch.stack((q_tail, q_head), dim=1).flatten(0, 1)  # [2B, we]: row 2b tail query, 2b + 1 head
        query = 2 * torch.arange(b, device=pos.device).unsqueeze(1) + heads.long()
        return pos_score, scorer.score_candidates(q, table, cand, query)

    def _embed_once(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids: [m] entity ids -> (table [U, we] of entity vectors, slots [m]: row of each id in the table).

        When most entities occur (at least half), the table is every entity's fused vector: with fusion
        ``none`` that is the structural parameter itself, so neither a gather nor an index-put backward over
        ``[U, we]`` is needed.  Otherwise only the distinct ids are embedded (and fused).
        """
        distinct, slots = unique_ids(ids, self.num_entities)
        if 2 * distinct.numel() >= self.num_entities:
            return self.entities.all_fused(), ids
        return self.entities(distinct), slots

    def score_tails(self, h: torch.Tensor, r: torch.Tensor, ent: torch.Tensor | None = None) -> torch.Tensor:
        """h: [B] head ids, r: [B] relation ids -> [B, N] scores of (h, r, e) for every entity e.

        ``ent`` [N, we]: every entity's fused vector when the caller has it already (one fusion for both
        query sides of a 1vsAll step)."""
        ent = self.entities.all_fused() if ent is None else ent
        return self.scorer.score_all_tails(ent[h], self.relations[r], ent)

    def score_heads(self, r: torch.Tensor, t: torch.Tensor, ent: torch.Tensor | None = None) -> torch.Tensor:
        """r: [B] relation ids, t: [B] tail ids -> [B, N] scores of (e, r, t) for every entity e.

        A reciprocal model answers the head query as the tail query ``(t, r + R, ?)``.  ``ent`` as for
        :meth:`score_tails`."""
        ent = self.entities.all_fused() if ent is None else ent
        if self.reciprocal:
            return self.scorer.score_all_tails(ent[t], self.relations[r + self._num_relations], ent)
        return self.scorer.score_all_heads(self.relations[r], ent[t], ent)

    def batch_regularization(self, batch: torch.Tensor) -> torch.Tensor:
        """batch: [B, 3] triples -> the N3 penalty (Lacroix et al. 2018), unweighted: the mean over the batch
        of ``sum |h|^3 + |r|^3 + |t|^3``, with complex moduli for complex entities (and ComplEx relations);
        RotatE's phases are not penalised (unit moduli).  A reciprocal model adds the inverse relation."""
        h, r, t = batch.unbind(-1)
        ent = self.entity(torch.cat((h, t)))
        parts = [_cube_moduli(ent, self.scorer.complex_valued)]
        if not self.scorer.phase_relations:
            parts.append(_cube_moduli(self.relations[r], self.scorer.complex_valued))
            if self.reciprocal:
                parts.append(_cube_moduli(self.relations[r + self._num_relations], self.scorer.complex_valued))
        return sum(parts) / batch.shape[0]

    # ------------------------------------------------------------------ regularisation
    def regularization(self, kind: str) -> torch.Tensor:
        """Scalar penalty over the full structural entity table and the full relation table.

        ``l3``: ``sum |x|^3`` (the released code's ``||E||_3^3 + ||R||_3^3``); ``l2``: ``sum x^2`` over the same
        tensors; ``none``: 0.  Unweighted: the caller applies ``loss.reg_weight``.

        Not penalised: projection weights, raw feature rows, missing vectors and the attention vector (the
        released code does not penalise them either), and RotatE's relation *phases*: a penalty on angles
        is not periodic and would only pull every relation towards the identity rotation.
        """
        if kind == "n3":
            raise ConfigError("loss.regularizer 'n3' penalises the batch's vectors: use batch_regularization(batch)")
        if kind not in REGULARIZERS:
            raise ConfigError(
                f"loss.regularizer: unknown regularizer {kind!r}; choose one of {list(REGULARIZERS)}"
            )
        if kind == "none":
            return self.relations.new_zeros(())
        tables = [self.entities.structural]
        if not self.scorer.phase_relations:
            tables.append(self.relations)
        if kind == "l2":
            return sum(t.square().sum() for t in tables)
        return sum(_AbsCubeSum.apply(t) for t in tables)

    def extra_repr(self) -> str:
        return f"scorer={self.scorer!r}, dim={self.dim}, num_relations={self.num_relations}"


def _cube_moduli(x: torch.Tensor, complex_valued: bool) -> torch.Tensor:
    """x: [n, w] -> scalar sum of |x_i|^3 (``complex_valued``: of the moduli of the [re..., im...] halves)."""
    if complex_valued:
        re, im = x.chunk(2, dim=-1)
        return (re.square() + im.square()).pow(1.5).sum()
    return x.abs().pow(3).sum()


class _AbsCubeSum(torch.autograd.Function):
    """``sum |x|^3`` with the gradient ``3 x |x|`` in two passes (autograd's abs-pow chain takes about six
    passes and as many table-sized temporaries; this runs over the full entity table every step)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.abs().pow_(3).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return x.abs().mul_(x).mul_(3 * grad)


def _corrupted_heads(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor | None:
    """pos: [B, 3], neg: [B, K, 3] -> bool [B, K], True where the head is the corrupted side; None when some
    negative changes the relation or both sides.  A negative equal to its positive counts as tail-corrupted
    (both readings give the same score)."""
    if neg.dim() != 3 or pos.dim() != 2 or neg.shape[0] != pos.shape[0] or neg.shape[-1] != 3:
        raise ValueError(
            f"expected pos [B, 3] and neg [B, K, 3], got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    same = neg == pos.unsqueeze(1)  # [B, K, 3]
    heads = ~same[..., 0]
    if not bool((same[..., 1] & (same[..., 0] | same[..., 2])).all()):
        return None
    return heads
