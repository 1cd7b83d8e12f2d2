"""The filter index of filtered link prediction: the known true answers of every query.

A *query* is a triple with one side hidden.  Tail prediction asks ``(h, r, ?)``, head prediction asks
``(?, r, t)``.  Filtered evaluation removes every *other* known true answer from the candidate list, so
the index stores, for each query key, the sorted set of true answers over all given triples
(train + valid + test).

The index is a CSR (compressed sparse row) structure built with one sort (numpy), no Python loop per
triple:

- a query key is ``relation * num_entities + entity`` (the entity being the known side), which is
  unique for any relation id as long as the entity id is below ``num_entities``;
- ``keys``: the distinct query keys, sorted; ``starts`` / ``counts``: where each key's answers lie in
  ``answers``; ``answers``: the true answers, sorted within each key, without duplicates.

Looking queries up is a ``searchsorted``; expanding them into (query row, answer) pairs is a handful of
vectorised ``repeat_interleave`` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dhns_search.errors import DataError

__all__ = ["FilterIndex", "build_filter_indexes", "check_triples"]


def check_triples(triples: torch.Tensor, num_entities: int, what: str) -> np.ndarray:
    """Check that ``triples`` is a valid ``LongTensor[n, 3]`` of (h, r, t) ids; return it as numpy.

    The checks run in numpy on a host copy: on a CPU shared with other work, single-threaded numpy
    reductions are far steadier than torch's multi-threaded ones on arrays of this size.

    Args:
        triples: [n, 3] integer (head, relation, tail) ids, on any device.
        num_entities: entity ids must lie in ``[0, num_entities)``.
        what: how the message names the tensor, e.g. ``"known triples #2"``.

    Returns:
        [n, 3] int64 numpy array of the same ids.

    Raises:
        DataError: not a tensor, not ``[n, 3]``, not integer, an entity id outside ``[0, num_entities)``
            or a negative relation id.
    """
    if not isinstance(triples, torch.Tensor):
        raise DataError(f"{what}: expected a torch.Tensor of shape [n, 3], got {type(triples).__name__}")
    if triples.dim() != 2 or triples.shape[1] != 3:
        raise DataError(f"{what}: expected shape [n, 3] (head, relation, tail), got {list(triples.shape)}")
    if triples.dtype.is_floating_point or triples.dtype.is_complex or triples.dtype == torch.bool:
        raise DataError(f"{what}: expected integer ids, got dtype {triples.dtype}")
    array = triples.detach().cpu().numpy().astype(np.int64, copy=False)
    if array.shape[0] == 0:
        return array
    lo = min(int(array[:, 0].min()), int(array[:, 2].min()))
    hi = max(int(array[:, 0].max()), int(array[:, 2].max()))
    if lo < 0 or hi >= num_entities:
        bad = lo if lo < 0 else hi
        raise DataError(f"{what}: entity id {bad} outside [0, {num_entities})")
    lowest_relation = int(array[:, 1].min())
    if lowest_relation < 0:
        raise DataError(f"{what}: negative relation id {lowest_relation}")
    return array


@dataclass(frozen=True)
class FilterIndex:
    """Sorted CSR map from a query key to its known true answers (see the module docstring).

    Attributes:
        keys: [k] distinct query keys ``relation * num_entities + entity``, ascending.
        starts: [k] offset of each key's first answer in ``answers``.
        counts: [k] number of answers of each key (>= 1).
        answers: [m] entity ids, grouped by key, ascending and distinct within a key.
        num_entities: the ``N`` used in the keys.
    """

    keys: torch.Tensor
    starts: torch.Tensor
    counts: torch.Tensor
    answers: torch.Tensor
    num_entities: int

    @classmethod
    def build(cls, known: np.ndarray, answer: np.ndarray, num_entities: int) -> FilterIndex:
        """Build the index (on the CPU) from parallel arrays of query keys and answers.

        Args:
            known: [m] int64 query keys (``relation * num_entities + known entity``), any order, repeats
                allowed.
            answer: [m] int64 true answer entity of each pair, in ``[0, num_entities)``.
            num_entities: ``N``.
        """
        n = num_entities
        # one numpy sort (several times faster than torch.unique / torch.sort on int64 CPU tensors)
        pairs = np.unique(np.asarray(known, dtype=np.int64) * n + np.asarray(answer, dtype=np.int64))
        pair_keys = pairs // n
        answers = pairs - pair_keys * n
        first = np.ones(pairs.shape[0], dtype=bool)
        first[1:] = pair_keys[1:] != pair_keys[:-1]
        starts = np.flatnonzero(first).astype(np.int64)
        counts = np.diff(np.append(starts, pairs.shape[0])).astype(np.int64)
        return cls(
            keys=torch.from_numpy(pair_keys[starts]),
            starts=torch.from_numpy(starts),
            counts=torch.from_numpy(counts),
            answers=torch.from_numpy(answers),
            num_entities=n,
        )

    @property
    def device(self) -> torch.device:
        """The device the index arrays live on."""
        return self.keys.device

    def to(self, device: torch.device | str) -> FilterIndex:
        """A copy of the index on ``device`` (``self`` when it is already there)."""
        device = torch.device(device)
        if self.keys.device == device:
            return self
        return FilterIndex(
            keys=self.keys.to(device),
            starts=self.starts.to(device),
            counts=self.counts.to(device),
            answers=self.answers.to(device),
            num_entities=self.num_entities,
        )

    def query_keys(self, relation: torch.Tensor, entity: torch.Tensor) -> torch.Tensor:
        """Returns [B] the keys of queries.

        Args:
            relation: [B] relation ids.
            entity: [B] the known entity of each query (the head for tail prediction, the tail for
                head prediction).
        """
        return relation.to(torch.int64) * self.num_entities + entity.to(torch.int64)

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(starts [B], counts [B])`` of the answers of each query key (count 0 if unknown).

        Args:
            keys: [B] query keys from :meth:`query_keys`, on the index's device.
        """
        if self.keys.numel() == 0:
            zeros = torch.zeros_like(keys)
            return zeros, zeros
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        found = self.keys[pos] == keys
        return self.starts[pos], torch.where(found, self.counts[pos], torch.zeros_like(keys))

    def expand(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All (query row, true answer) pairs of a batch of queries, vectorised.

        Args:
            keys: [B] query keys from :meth:`query_keys`, on the index's device.

        Returns:
            ``(rows [m], cols [m])``: query ``rows[j]`` has the known true answer ``cols[j]``; the rows are
            ascending.
        """
        starts, counts = self.lookup(keys)
        total = int(counts.sum())
        if total == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=keys.device)
            return empty, empty
        rows = torch.repeat_interleave(torch.arange(keys.numel(), device=keys.device), counts)
        # position of each pair inside its query's run: j - (first j of that run)
        run_first = torch.cumsum(counts, 0) - counts
        within = torch.arange(total, device=keys.device) - torch.repeat_interleave(run_first, counts)
        cols = self.answers[torch.repeat_interleave(starts, counts) + within]
        return rows, cols


def build_filter_indexes(
    known_triples: Sequence[torch.Tensor], num_entities: int
) -> tuple[FilterIndex, FilterIndex]:
    """Build the tail and head filter indexes of a knowledge graph, on the CPU.

    Args:
        known_triples: tensors [n_i, 3] of (head, relation, tail) ids, e.g. train, valid and test.
        num_entities: ``N``; every entity id lies in ``[0, N)``.

    Returns:
        ``(tails, heads)``: ``tails`` maps ``(h, r)`` to the true tails, ``heads`` maps ``(r, t)`` to the
        true heads.
    """
    parts = [
        check_triples(triples, num_entities, f"known triples #{i}") for i, triples in enumerate(known_triples)
    ]
    allt = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
    h, r, t = allt[:, 0], allt[:, 1], allt[:, 2]
    rel_key = r * num_entities
    tails = FilterIndex.build(rel_key + h, t, num_entities)
    heads = FilterIndex.build(rel_key + t, h, num_entities)
    return tails, heads
