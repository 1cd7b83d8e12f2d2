"""Stateless KGE scorers (higher = more plausible) that work on embeddings, not ids.

DHNS scores *generated* entity vectors, which have no id, so every scorer is a set of pure tensor
functions that broadcast over leading batch dimensions (pykeen's interaction functions).

Each scorer is written as two pieces:

* :meth:`Scorer.compose` ``q = C(e, r, target)``: the "query" built from the known entity and the relation,
  exactly the DiffHEG condition of method section 2 (tail from head: ``h o r``; head from tail:
  ``t o r^-1``);
* :meth:`Scorer.similarity` ``s(q, x)``: how well a candidate entity ``x`` answers the query.

Then ``score(h, r, t) = s(C(h, r, "tail"), t) = s(C(t, r, "head"), h)``; the second identity holds for
every scorer here (TransE exactly; RotatE because ``|r_i| = 1``; DistMult and ComplEx algebraically), so
ranking all heads and ranking all tails is the same code: compose once, compare with every entity.  The
same identity scores a positive's K corrupted negatives (:meth:`Scorer.score_candidates`): the query is
composed once per positive, and a bilinear scorer scores the candidates as a sampled matrix product
(:mod:`dhns_search.models.candidates`) instead of materialising ``[B, K, w]`` tensors.

What other modules need to know about a scorer is declared on its class, never tested by name:
``distance`` (score = gamma - distance), ``complex_valued`` (entities in C^d, 2d reals),
``phase_relations`` (relations are rotation phases: initialised in (-pi, pi), not regularised),
``supports_candidate_matmul`` (the similarity is a real dot product) and ``generated_scoring`` (how DHNS
scores generated vectors when ``dhns.scoring`` is ``auto``).  The registry's names are the config's
``model.scorer`` choices (:data:`dhns_search.config.models.SCORER_NAMES`, torch-free).

========  ===============================  =====================  ==========================================
scorer    score(h, r, t)                   compose tail / head    entity / relation widths (reals, d = dim)
========  ===============================  =====================  ==========================================
transe    gamma - ||h + r - t||_1          h + r / t - r          d / d
rotate    gamma - sum_i |h_i r_i - t_i|    h o r / t o conj(r)    2d ([re..., im...]) / d phases (radians)
distmult  sum(h * r * t)                   h * r / t * r          d / d
complex   Re(sum(h * r * conj(t)))         h * r / t * conj(r)    2d / 2d (both [re..., im...])
========  ===============================  =====================  ==========================================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch

from dhns_search.config.models import NO_ONE_VS_ALL, SCORER_NAMES
from dhns_search.errors import ConfigError
from dhns_search.models.candidates import sampled_dot

Target = Literal["tail", "head"]

__all__ = [
    "SCORERS",
    "ComplExScorer",
    "DistMultScorer",
    "RotatEScorer",
    "Scorer",
    "TransEScorer",
    "make_scorer",
]


def _check_target(target: str) -> None:
    if target not in ("tail", "head"):
        raise ValueError(f"target must be 'tail' or 'head', got {target!r}")


def _halves(x: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [..., 2k] complex vector laid out [re..., im...] -> (re [..., k], im [..., k])."""
    if x.shape[-1] % 2:
        raise ValueError(
            f"{what} must have an even last dimension ([re..., im...]), got shape {tuple(x.shape)}"
        )
    return x.chunk(2, dim=-1)


class Scorer(ABC):
    """A KGE interaction function.  Stateless apart from ``gamma`` (unused by bilinear scorers)."""

    #: registry name
    name: ClassVar[str]
    #: True when ``score = gamma - distance`` (TransE, RotatE); False for bilinear scorers
    distance: ClassVar[bool]
    #: entities are complex vectors of d components laid out [re..., im...] (2d reals)
    complex_valued: ClassVar[bool] = False
    #: relations are d rotation phases in radians (not regularised; initialised uniform in (-pi, pi))
    phase_relations: ClassVar[bool] = False
    #: ``similarity(q, x)`` is the real dot product ``q . x``, so candidates score as a sampled matmul
    supports_candidate_matmul: ClassVar[bool] = False
    #: ``dhns.scoring: auto``: how generated vectors are scored (the released code's choice per scorer)
    generated_scoring: ClassVar[Literal["average", "fused"]] = "fused"
    #: 1vsAll training (``negatives.sampler: all``) is accepted; config.models.NO_ONE_VS_ALL lists the others
    one_vs_all: ClassVar[bool] = True

    def __init__(self, *, gamma: float) -> None:
        gamma = float(gamma)
        if not math.isfinite(gamma):
            raise ConfigError(f"model.gamma must be finite, got {gamma}")
        self.gamma = gamma

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gamma={self.gamma})"

    # ------------------------------------------------------------------ widths
    def entity_width(self, dim: int) -> int:
        """Reals per entity vector for model dimension ``dim``."""
        return 2 * dim if self.complex_valued else dim

    def relation_width(self, dim: int) -> int:
        """Reals per relation vector for model dimension ``dim`` (phases: one per complex component)."""
        return 2 * dim if self.complex_valued and not self.phase_relations else dim

    # ------------------------------------------------------------------ the two primitives
    @abstractmethod
    def compose(self, e: torch.Tensor, r: torch.Tensor, target: Target) -> torch.Tensor:
        """The query (DiffHEG condition) that the missing entity should match.

        Args:
            e: [..., we] the known entity: the head when ``target == "tail"``, the tail otherwise.
            r: [..., wr] relation vectors (broadcast against ``e``).
            target: ``"tail"`` -> ``h o r``; ``"head"`` -> ``t o r^-1`` (see the module table).

        Returns:
            [..., we] the composed query.
        """

    @abstractmethod
    def similarity(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """q: [..., we] composed queries, x: [..., we] candidate entities (broadcast) -> [...] scores."""

    @abstractmethod
    def similarity_all(self, q: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        """q: [B, we] composed queries, ent: [N, we] every entity -> [B, N] scores (memory-efficient)."""

    def score_candidates(
        self, q: torch.Tensor, table: torch.Tensor, cand: torch.Tensor, query: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of candidate entities against composed queries: ``s(q[query[b, k]], table[cand[b, k]])``.

        Args:
            q: [P, we] composed queries (:meth:`compose`).
            table: [U, we] candidate entity vectors.
            cand: [B, K] long rows of ``table``.
            query: [B, K] long rows of ``q``; None means row ``b`` of ``cand`` answers ``q[b]`` (P == B).

        Returns:
            [B, K] scores.  Bilinear scorers compute them as a sampled matrix product
            (:func:`~dhns_search.models.candidates.sampled_dot`); the others gather ``[B, K, we]``.
        """
        if self.supports_candidate_matmul:
            return sampled_dot(q, table, cand, query)
        x = table[cand]
        return self.similarity(q.unsqueeze(1) if query is None else q[query], x)

    # ------------------------------------------------------------------ public scoring API
    def score(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Scores of triples given as embeddings.

        Args:
            h: [..., we] head vectors.
            r: [..., wr] relation vectors.
            t: [..., we] tail vectors.  The three leading shapes broadcast together.

        Returns:
            [...] scores, higher = more plausible.
        """
        return self.similarity(self.compose(h, r, "tail"), t)

    def score_all_tails(self, h: torch.Tensor, r: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        """h: [B, we] heads, r: [B, wr] relations, ent: [N, we] candidates -> [B, N] scores of (h, r, ent_n)."""
        return self.similarity_all(self.compose(h, r, "tail"), ent)

    def score_all_heads(self, r: torch.Tensor, t: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        """r: [B, wr] relations, t: [B, we] tails, ent: [N, we] candidates -> [B, N] scores of (ent_n, r, t)."""
        return self.similarity_all(self.compose(t, r, "head"), ent)


# ====================================================================== distance scorers
class TransEScorer(Scorer):
    """TransE with the L1 norm: ``gamma - ||h + r - t||_1``."""

    name = "transe"
    distance = True

    def compose(self, e: torch.Tensor, r: torch.Tensor, target: Target) -> torch.Tensor:
        _check_target(target)
        return e + r if target == "tail" else e - r

    def similarity(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.gamma - (q - x).abs().sum(dim=-1)

    def similarity_all(self, q: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        # cdist with p=1 computes the pairwise L1 distances without a [B, N, we] intermediate.
        return self.gamma - torch.cdist(q, ent, p=1.0)


class RotatEScorer(Scorer):
    """RotatE: entities in C^d laid out [re..., im...]; relations are d phases (radians).

    ``score = gamma - sum_i |h_i * r_i - t_i|`` with ``r_i = exp(i * phase_i)``.
    """

    name = "rotate"
    distance = True
    complex_valued = True
    phase_relations = True
    one_vs_all = False
    #: bound on B * chunk * d elements of one intermediate in :meth:`similarity_all` (about 64 MiB in fp32)
    chunk_elements: ClassVar[int] = 1 << 24

    def compose(self, e: torch.Tensor, r: torch.Tensor, target: Target) -> torch.Tensor:
        _check_target(target)
        re, im = _halves(e, "RotatE entity vectors")
        if r.shape[-1] != re.shape[-1]:
            raise ValueError(
                f"RotatE relations need {re.shape[-1]} phases for entity width {e.shape[-1]}, got {r.shape[-1]}"
            )
        cos, sin = torch.cos(r), torch.sin(r)
        if target == "tail":  # e * r
            return torch.cat((re * cos - im * sin, re * sin + im * cos), dim=-1)
        # e * conj(r)
        return torch.cat((re * cos + im * sin, im * cos - re * sin), dim=-1)

    @staticmethod
    def _modulus_sum(d_re: torch.Tensor, d_im: torch.Tensor) -> torch.Tensor:
        """d_re, d_im: [..., d] real and imaginary differences -> [...] sum of the moduli.

        The squared modulus is clamped at the smallest normal number before the square root, so the
        gradient where a difference is exactly zero is 0, not NaN (as with ``hypot``); the value moves by
        at most ``sqrt(tiny)`` (1e-19 in fp32).  Half the cost of ``vector_norm`` over a stacked pair.
        """
        sq = d_re.square() + d_im.square()
        return sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt().sum(dim=-1)

    def similarity(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q_re, q_im = _halves(q, "RotatE queries")
        x_re, x_im = _halves(x, "RotatE entity vectors")
        return self.gamma - self._modulus_sum(q_re - x_re, q_im - x_im)

    def similarity_all(self, q: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        q_re, q_im = _halves(q, "RotatE queries")
        e_re, e_im = _halves(ent, "RotatE entity vectors")
        b, d = q_re.shape
        chunk = max(1, self.chunk_elements // max(1, b * d))
        q_re, q_im = q_re.unsqueeze(1), q_im.unsqueeze(1)  # [B, 1, d]
        parts = []
        for start in range(0, ent.shape[0], chunk):  # [B, chunk, d] at a time
            c_re, c_im = e_re[start : start + chunk], e_im[start : start + chunk]
            parts.append(self._modulus_sum(q_re - c_re, q_im - c_im))
        out = torch.cat(parts, dim=1) if parts else q.new_zeros(b, 0)
        return self.gamma - out


# ====================================================================== bilinear scorers
class DistMultScorer(Scorer):
    """DistMult: ``sum(h * r * t)``.  ``gamma`` is ignored."""

    name = "distmult"
    distance = False
    supports_candidate_matmul = True
    generated_scoring = "average"  # the released DistMult averages the per-modality scores

    def compose(self, e: torch.Tensor, r: torch.Tensor, target: Target) -> torch.Tensor:
        _check_target(target)
        return e * r  # symmetric: h * r for a tail, t * r for a head

    def similarity(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (q * x).sum(dim=-1)

    def similarity_all(self, q: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        return q @ ent.transpose(0, 1)


class ComplExScorer(Scorer):
    """ComplEx: ``Re(sum(h * r * conj(t)))``, entities and relations in C^d laid out [re..., im...].

    ``Re(<q, conj(x)>) = q_re . x_re + q_im . x_im`` is the real dot product of the layouts, so
    ``score = C(h, r, "tail") . t`` with ``C = h * r`` and, since ``Re(z) = Re(conj(z))``,
    ``score = C(t, r, "head") . h`` with ``C = t * conj(r)``.  ``gamma`` is ignored.
    """

    name = "complex"
    distance = False
    complex_valued = True
    supports_candidate_matmul = True

    def compose(self, e: torch.Tensor, r: torch.Tensor, target: Target) -> torch.Tensor:
        _check_target(target)
        e_re, e_im = _halves(e, "ComplEx entity vectors")
        r_re, r_im = _halves(r, "ComplEx relation vectors")
        if target == "tail":  # e * r
            return torch.cat((e_re * r_re - e_im * r_im, e_re * r_im + e_im * r_re), dim=-1)
        # e * conj(r)
        return torch.cat((e_re * r_re + e_im * r_im, e_im * r_re - e_re * r_im), dim=-1)

    def similarity(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (q * x).sum(dim=-1)

    def similarity_all(self, q: torch.Tensor, ent: torch.Tensor) -> torch.Tensor:
        return q @ ent.transpose(0, 1)


#: registry: config name -> scorer class, in the order of the config's ``model.scorer`` choices
SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (TransEScorer, RotatEScorer, DistMultScorer, ComplExScorer)
}
if tuple(SCORERS) != SCORER_NAMES:  # one list of names: the config's choices are the registry's
    raise ImportError(f"scorer registry {tuple(SCORERS)} differs from config SCORER_NAMES {SCORER_NAMES}")
if tuple(n for n, c in SCORERS.items() if not c.one_vs_all) != NO_ONE_VS_ALL:
    raise ImportError(f"Scorer.one_vs_all disagrees with config NO_ONE_VS_ALL {NO_ONE_VS_ALL}")


def make_scorer(name: str, *, gamma: float) -> Scorer:
    """The scorer registered as ``name`` (``transe``, ``rotate``, ``distmult``, ``complex``)."""
    try:
        cls = SCORERS[name]
    except KeyError:
        raise ConfigError(f"model.scorer: unknown scorer {name!r}; choose one of {sorted(SCORERS)}") from None
    return cls(gamma=gamma)
