"""Negative sampling by corrupting one side of each positive triple (pykeen style).

:meth:`NegativeSampler.sample` is fixed: it decides, per negative, whether the head or the tail is
corrupted (``corrupt`` mode), draws replacement entities, assembles the corrupted triples and, when
``filtered``, re-draws those that are true training triples.  A sampler only says how likely a head
corruption is (:meth:`NegativeSampler.head_probability`, the one abstract method, used by ``mixed``
mode); :meth:`NegativeSampler.draw_entities` (uniform by default) is the hook for samplers that pick
replacement entities differently.

Corrupt modes:

* ``alternate`` (released code, OpenKE cross sampling): a whole batch corrupts one side; batch index
  **even -> tail** corrupted, **odd -> head** corrupted (OpenKE's loader starts with a tail batch);
* ``head`` / ``tail``: always that side;
* ``mixed``: each negative independently corrupts the head with probability ``head_probability``
  (0.5 for :class:`UniformSampler`; ``tph / (tph + hpt)`` of the triple's relation for
  :class:`BernoulliSampler`, Wang et al. 2014).

Filtering: a triple (h, r, t) is hashed to ``(h * R + r) * N + t`` (int64; exact for any N^2 R < 2^63);
the training keys are held sorted and looked up with ``torch.searchsorted``.  Negatives that hit a
training triple are re-drawn for up to ``max_rounds`` vectorised rounds; any still left (an entity
linked to almost everything) are then replaced exactly by a uniform draw among the entities that give no
training triple, so a filtered sampler never returns a training triple unless no such entity exists.

Randomness comes only from the ``generator`` passed to :meth:`~NegativeSampler.sample`; draws happen on
the generator's device and the result is moved to the batch's device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch

from dhns_search.config.models import NegativeConfig
from dhns_search.errors import ConfigError, DataError

__all__ = [
    "CORRUPT_MODES",
    "NEGATIVE_SAMPLERS",
    "BernoulliSampler",
    "NegativeSampler",
    "UniformSampler",
    "bernoulli_head_probabilities",
    "make_negative_sampler",
    "triple_keys",
]

CorruptMode = Literal["alternate", "head", "tail", "mixed"]
CORRUPT_MODES = ("alternate", "head", "tail", "mixed")
#: elements of one [rows, N] candidate block in the exact filtering fallback
_FALLBACK_ELEMENTS = 1 << 22


def triple_keys(triples: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """triples: [..., 3] (h, r, t) ids -> [...] int64 keys ``(h * R + r) * N + t``, unique per triple."""
    h, r, t = triples.long().unbind(-1)
    return (h * num_relations + r) * num_entities + t


def _check_triples(train: torch.Tensor, num_entities: int, num_relations: int, what: str) -> torch.Tensor:
    if train.dim() != 2 or train.shape[1] != 3:
        raise DataError(
            f"{what}: expected a LongTensor [n, 3] of (head, relation, tail), got {tuple(train.shape)}"
        )
    train = train.long()
    if train.numel():
        ent = train[:, [0, 2]]
        if ent.min() < 0 or ent.max() >= num_entities:
            raise DataError(f"{what}: entity ids outside [0, {num_entities})")
        if train[:, 1].min() < 0 or train[:, 1].max() >= num_relations:
            raise DataError(f"{what}: relation ids outside [0, {num_relations})")
    return train


def bernoulli_head_probabilities(train: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """train: [n, 3] triples -> [R] probability of corrupting the head, ``tph / (tph + hpt)`` per relation.

    ``tph`` (tails per head) = triples of r / distinct heads of r; ``hpt`` (heads per tail) = triples of r /
    distinct tails of r.  A 1-to-N relation (many tails per head) corrupts the head more often, so that
    fewer of its negatives are false.  Relations without training triples get 0.5.
    """
    train = _check_triples(train, num_entities, num_relations, "training triples")
    h, r, t = train.unbind(-1)
    count = torch.bincount(r, minlength=num_relations).double()
    heads = torch.bincount(
        torch.unique(r * num_entities + h) // num_entities, minlength=num_relations
    ).double()
    tails = torch.bincount(
        torch.unique(r * num_entities + t) // num_entities, minlength=num_relations
    ).double()
    seen = count > 0
    tph = torch.where(seen, count / heads.clamp_min(1), torch.ones_like(count))
    hpt = torch.where(seen, count / tails.clamp_min(1), torch.ones_like(count))
    return (tph / (tph + hpt)).float()


class NegativeSampler(ABC):
    """Base class: ``sample`` is fixed; subclasses give :meth:`head_probability`.

    Args:
        num_entities: number of entities N (replacements are drawn from ``[0, N)``).
        num_relations: number of relations R.
        num_negatives: negatives K per positive.
        corrupt: ``"alternate"``, ``"head"``, ``"tail"`` or ``"mixed"`` (module docstring).
        filtered: re-draw negatives that are training triples (needs ``train``).
        train: [n, 3] training triples (h, r, t).
        max_rounds: vectorised re-draw rounds before the exact fallback.
    """

    def __init__(
        self,
        *,
        num_entities: int,
        num_relations: int,
        num_negatives: int,
        corrupt: CorruptMode = "alternate",
        filtered: bool = False,
        train: torch.Tensor | None = None,
        max_rounds: int = 10,
    ) -> None:
        if num_entities < 2:
            raise ConfigError(f"negative sampling needs at least 2 entities, got num_entities={num_entities}")
        if num_relations < 1:
            raise ConfigError(f"num_relations must be >= 1, got {num_relations}")
        if num_negatives < 1:
            raise ConfigError(f"negatives.num must be >= 1, got {num_negatives}")
        if corrupt not in CORRUPT_MODES:
            raise ConfigError(
                f"negatives.corrupt: unknown mode {corrupt!r}; choose one of {list(CORRUPT_MODES)}"
            )
        if max_rounds < 0:
            raise ConfigError(f"max_rounds must be >= 0, got {max_rounds}")
        if filtered and train is None:
            raise ConfigError("negatives.filtered needs the training triples (train=...)")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.num_negatives = num_negatives
        self.corrupt = corrupt
        self.filtered = filtered
        self.max_rounds = max_rounds
        self._keys: torch.Tensor | None = None
        if filtered:
            train = _check_triples(train, num_entities, num_relations, "training triples")
            self._keys = torch.unique(triple_keys(train, num_entities, num_relations))  # sorted

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_negatives={self.num_negatives}, corrupt={self.corrupt!r}, "
            f"filtered={self.filtered})"
        )

    # ------------------------------------------------------------------ the hooks
    @abstractmethod
    def head_probability(self, batch: torch.Tensor) -> torch.Tensor:
        """batch: [B, 3] positives -> [B] float probability that a ``mixed`` negative corrupts the head."""

    def draw_entities(
        self, batch: torch.Tensor, heads: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Replacement entities, uniform over all entities.

        Args:
            batch: [B, 3] positives (on the generator's device).
            heads: bool [B, K]; True where the head is replaced.
            generator: the only source of randomness.

        Returns:
            LongTensor [B, K] entity ids.
        """
        return torch.randint(
            self.num_entities, tuple(heads.shape), generator=generator, device=generator.device
        )

    # ------------------------------------------------------------------ the fixed algorithm
    def sample(self, batch: torch.Tensor, batch_index: int, generator: torch.Generator) -> torch.Tensor:
        """Corrupted triples for a batch of positives.

        Args:
            batch: [B, 3] positive (h, r, t) ids.
            batch_index: running batch counter (decides the side in ``alternate`` mode: even -> tail).
            generator: the only source of randomness; same generator state -> same negatives.

        Returns:
            LongTensor [B, K, 3] corrupted triples; each row keeps its positive's relation and one side.
        """
        if batch.dim() != 2 or batch.shape[1] != 3:
            raise ValueError(f"batch must be [B, 3] (h, r, t), got {tuple(batch.shape)}")
        out_device = batch.device
        batch = batch.long().to(generator.device)
        heads = self._corrupt_heads(batch, batch_index, generator)
        ents = self.draw_entities(batch, heads, generator)
        if self.filtered:
            return self._filter(batch, heads, ents, generator).to(out_device)
        return self._assemble(batch, heads, ents).to(out_device)

    def _corrupt_heads(
        self, batch: torch.Tensor, batch_index: int, generator: torch.Generator
    ) -> torch.Tensor:
        """bool [B, K]: which negatives replace the head."""
        shape = (batch.shape[0], self.num_negatives)
        if self.corrupt == "mixed":
            p = self.head_probability(batch).to(device=batch.device, dtype=torch.float32)
            u = torch.rand(shape, generator=generator, device=generator.device)
            return u < p.unsqueeze(-1)
        head = self.corrupt == "head" or (self.corrupt == "alternate" and batch_index % 2 == 1)
        return torch.full(shape, head, dtype=torch.bool, device=batch.device)

    @staticmethod
    def _assemble(batch: torch.Tensor, heads: torch.Tensor, ents: torch.Tensor) -> torch.Tensor:
        """[B, 3] positives, bool [B, K] side, [B, K] entities -> [B, K, 3] corrupted triples."""
        neg = batch.unsqueeze(1).expand(-1, heads.shape[1], -1).clone()
        neg[..., 0] = torch.where(heads, ents, neg[..., 0])
        neg[..., 2] = torch.where(heads, neg[..., 2], ents)
        return neg

    def is_training_triple(self, triples: torch.Tensor) -> torch.Tensor:
        """triples: [..., 3] -> bool [...]; True for training triples (needs ``filtered`` / ``train``)."""
        return self._is_training_key(triple_keys(triples, self.num_entities, self.num_relations))

    def _is_training_key(self, keys: torch.Tensor) -> torch.Tensor:
        """keys: [...] triple keys -> bool [...]; True for keys of training triples."""
        if self._keys is None:
            raise ValueError("is_training_triple needs a sampler built with filtered=True")
        if self._keys.device != keys.device:
            self._keys = self._keys.to(keys.device)
        if self._keys.numel() == 0:
            return torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
        pos = torch.searchsorted(self._keys, keys).clamp_max_(self._keys.numel() - 1)
        return self._keys[pos] == keys

    def _corrupted_keys(self, batch: torch.Tensor, heads: torch.Tensor, ents: torch.Tensor) -> torch.Tensor:
        """[B, 3] positives, bool [B, K] side, [B, K] entities -> [B, K] keys of the corrupted triples.

        ``triple_keys`` of ``_assemble``'s triples without assembling them: ``e R N + (r N + t)`` for a head
        ``e``, ``(h R + r) N + e`` for a tail ``e``.
        """
        n, r_count = self.num_entities, self.num_relations
        h, r, t = batch.unbind(-1)
        head_rest = (r * n + t).unsqueeze(1)
        tail_base = ((h * r_count + r) * n).unsqueeze(1)
        return torch.where(heads, ents * (r_count * n) + head_rest, ents + tail_base)

    def _filter(
        self, batch: torch.Tensor, heads: torch.Tensor, ents: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The [B, K, 3] corrupted triples, training triples re-drawn (module docstring)."""
        # 1. vectorised re-draw rounds: fresh entities only where the negative is a training triple; the
        #    lookups use the triples' keys, so the triples are assembled once, at the end
        bad = self._is_training_key(self._corrupted_keys(batch, heads, ents))
        for _ in range(self.max_rounds):
            if not bool(bad.any()):
                break
            ents = torch.where(bad, self.draw_entities(batch, heads, generator), ents)
            bad = self._is_training_key(self._corrupted_keys(batch, heads, ents))
        neg = self._assemble(batch, heads, ents)
        if bool(bad.any()):
            self._fallback(neg, heads, bad, generator)
        return neg

    def _fallback(
        self, neg: torch.Tensor, heads: torch.Tensor, bad: torch.Tensor, generator: torch.Generator
    ) -> None:
        """Replace, in place, the negatives of ``neg`` [B, K, 3] marked ``bad`` [B, K] (still training
        triples after the rounds) by a uniform draw among the entities that give no training triple."""
        rows, cols = bad.nonzero(as_tuple=True)
        n = self.num_entities
        candidates = torch.arange(n, device=neg.device)
        step = max(1, _FALLBACK_ELEMENTS // n)
        for start in range(0, rows.numel(), step):
            rr, cc = rows[start : start + step], cols[start : start + step]
            base = neg[rr, cc]  # [m, 3]
            trial = base.unsqueeze(1).expand(-1, n, -1).clone()  # [m, N, 3]
            side = torch.where(heads[rr, cc], 0, 2)  # column to replace
            trial.scatter_(
                2, side.view(-1, 1, 1).expand(-1, n, 1), candidates.view(1, n, 1).expand(rr.numel(), -1, -1)
            )
            ok = ~self.is_training_triple(trial)  # [m, N]
            u = torch.rand(ok.shape, generator=generator, device=generator.device)
            choice = torch.where(ok, u, torch.full_like(u, -1.0)).argmax(dim=1)
            has = ok.any(dim=1)  # rows whose entity is linked to every candidate keep their draw
            new = torch.where(has, choice, base.gather(1, side.view(-1, 1)).squeeze(1))
            neg[rr, cc, side] = new


class UniformSampler(NegativeSampler):
    """Uniform replacement entities; ``mixed`` corrupts head or tail with probability 0.5."""

    def head_probability(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.full((batch.shape[0],), 0.5, device=batch.device)


class BernoulliSampler(NegativeSampler):
    """Bernoulli side choice (Wang et al. 2014): the head is corrupted with probability tph / (tph + hpt).

    The side is chosen per negative, so this sampler needs ``corrupt="mixed"``; any other mode would fix
    the side and make it the uniform sampler, so it is rejected rather than silently ignored.
    Same keyword arguments as :class:`NegativeSampler`; ``train`` is required.
    """

    def __init__(
        self, *, train: torch.Tensor | None = None, corrupt: CorruptMode = "mixed", **kwargs
    ) -> None:
        if corrupt != "mixed":
            raise ConfigError(
                f"negatives.sampler 'bernoulli' picks the corrupted side per negative and needs "
                f"negatives.corrupt 'mixed', got {corrupt!r}"
            )
        if train is None:
            raise ConfigError("negatives.sampler 'bernoulli' needs the training triples (train=...)")
        super().__init__(train=train, corrupt=corrupt, **kwargs)
        #: [R] probability of corrupting the head, per relation
        self.head_probabilities = bernoulli_head_probabilities(train, self.num_entities, self.num_relations)

    def head_probability(self, batch: torch.Tensor) -> torch.Tensor:
        probs = self.head_probabilities.to(batch.device)
        return probs[batch[:, 1]]


#: registry: ``negatives.sampler`` -> sampler class
NEGATIVE_SAMPLERS: dict[str, type[NegativeSampler]] = {
    "uniform": UniformSampler,
    "bernoulli": BernoulliSampler,
}


def make_negative_sampler(
    cfg: NegativeConfig, train: torch.Tensor, num_entities: int, num_relations: int
) -> NegativeSampler:
    """The sampler ``cfg`` describes, for the training triples ``train`` [n, 3]."""
    try:
        cls = NEGATIVE_SAMPLERS[cfg.sampler]
    except KeyError:
        raise ConfigError(
            f"negatives.sampler: unknown sampler {cfg.sampler!r}; choose one of {sorted(NEGATIVE_SAMPLERS)}"
        ) from None
    return cls(
        num_entities=num_entities,
        num_relations=num_relations,
        num_negatives=cfg.num,
        corrupt=cfg.corrupt,
        filtered=cfg.filtered,
        train=train,
    )
