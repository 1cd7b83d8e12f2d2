"""Filtered link-prediction ranking: ranks, tie policies and metrics.

Protocol
--------
Every evaluated triple ``(h, r, t)`` gives two queries: *tail prediction* ``(h, r, ?)`` scored with
``model.score_tails(h, r)`` and *head prediction* ``(?, r, t)`` scored with ``model.score_heads(r, t)``.
Each query ranks the true entity against **all** ``N`` entities.  Scores are *higher = more plausible*.

Filtering: every *other* entity that forms a known true triple (train, valid or test, as given to
:class:`FilteredEvaluator`) is removed from the candidates; the true entity itself is kept.  With ``F``
such other true answers, the candidates are ``N - F`` entities including the true one.

Ranks and ties (``s`` is the true entity's score, comparisons over the remaining candidates):

- **optimistic** rank = 1 + #(candidates scoring strictly higher than ``s``): ties favour the true entity
  (the protocol of the published DHNS numbers; a constant scorer gets rank 1);
- **pessimistic** rank = 1 + #(candidates, other than the true entity, scoring higher than or equal to
  ``s``): ties count against it (a constant scorer gets rank ``N - F``);
- **realistic** rank = (optimistic + pessimistic) / 2, the expected rank when ties are broken uniformly at
  random; it may be a half-integer.

NaN scores rank last, never first: a NaN candidate score counts as ``-inf`` (so it is never better than
the true entity, and ties with it only when the true score is ``-inf``); a NaN *true* score gets the worst
rank, ``N - F``, under all three policies.

Metrics, for each policy ``p`` and rank ``k``:
``mrr`` = mean of ``1 / rank`` (realistic MRR is the mean of ``1 / realistic rank``, *not* the mean of the
optimistic and pessimistic MRRs), ``mr`` = mean rank, ``hits_at_k`` = fraction of queries with
``rank <= k`` (for realistic: ``realistic rank <= k``).  They are reported as ``{metric}_{p}_filtered``
averaged over all ``2n`` queries, and as ``head_{metric}_{p}_filtered`` / ``tail_{metric}_{p}_filtered``
over the ``n`` queries of one direction (``head_`` = predicting the head), plus ``num_triples`` = ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from dhns_search.errors import DataError
from dhns_search.evaluation.index import FilterIndex, build_filter_indexes, check_triples

__all__ = [
    "HITS_AT",
    "METRICS",
    "POLICIES",
    "DirectionRanks",
    "FilteredEvaluator",
    "RankingModel",
    "Ranks",
    "filtered_ranks",
    "metrics_from_ranks",
]

POLICIES: tuple[str, ...] = ("optimistic", "pessimistic", "realistic")
HITS_AT: tuple[int, ...] = (1, 3, 10)
METRICS: tuple[str, ...] = ("mrr", "mr", *(f"hits_at_{k}" for k in HITS_AT))


@runtime_checkable
class RankingModel(Protocol):
    """What the evaluator needs from a model: scores of one query against every entity."""

    def score_tails(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Returns [B, N] the scores of ``(h[i], r[i], e)`` for every entity ``e``.

        Args:
            h: [B] head ids.
            r: [B] relation ids.
        """
        ...

    def score_heads(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Returns [B, N] the scores of ``(e, r[i], t[i])`` for every entity ``e``.

        Args:
            r: [B] relation ids.
            t: [B] tail ids.
        """
        ...


def filtered_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    filter_rows: torch.Tensor,
    filter_cols: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimistic and pessimistic filtered ranks of a batch of queries (see the module docstring).

    Vectorised: two comparisons over ``[B, N]`` count the better / better-or-equal candidates, and the
    same comparisons on the (few) filtered entries are subtracted, so no ``[B, N]`` filter mask is built and
    the scores are never modified.

    Args:
        scores: [B, N] scores of every entity for each query, higher = more plausible; NaN allowed.
        targets: [B] the true entity of each query.
        filter_rows: [m] query row of each known true answer.
        filter_cols: [m] the known true answer entity; entries equal to the row's target are ignored
            (the true entity stays a candidate), repeats are not allowed.

    Returns:
        ``(optimistic [B], pessimistic [B])`` int64 ranks in ``[1, N - F]``.
    """
    num_queries, num_entities = scores.shape
    device = scores.device
    target_scores = scores.gather(1, targets.view(-1, 1))  # [B, 1]
    # (a bool sum with an int32 accumulator is several times faster on CPU than count_nonzero / int64)
    better = (scores > target_scores).sum(1, dtype=torch.int32).to(torch.int64)
    # includes the true entity itself, unless its score is NaN
    better_or_equal = (scores >= target_scores).sum(1, dtype=torch.int32).to(torch.int64)
    target_scores = target_scores.view(-1)
    # NaN candidates count as -inf: comparisons with NaN are false, which is right except against a
    # true score of -inf, where every candidate (NaN included) ties.
    better_or_equal = torch.where(
        target_scores == float("-inf"), torch.full_like(better_or_equal, num_entities), better_or_equal
    )

    others = filter_cols != targets[filter_rows]
    rows, cols = filter_rows[others], filter_cols[others]
    filtered_scores = scores[rows, cols]
    filtered_scores = torch.where(
        torch.isnan(filtered_scores), torch.full_like(filtered_scores, float("-inf")), filtered_scores
    )
    row_targets = target_scores[rows]
    zeros = torch.zeros(num_queries, dtype=torch.int64, device=device)
    filtered_better = zeros.index_add(0, rows, (filtered_scores > row_targets).to(torch.int64))
    filtered_better_or_equal = zeros.index_add(0, rows, (filtered_scores >= row_targets).to(torch.int64))
    filtered = zeros.index_add(0, rows, torch.ones_like(rows))

    optimistic = 1 + better - filtered_better
    pessimistic = better_or_equal - filtered_better_or_equal
    worst = num_entities - filtered
    nan_target = torch.isnan(target_scores)
    optimistic = torch.where(nan_target, worst, optimistic)
    pessimistic = torch.where(nan_target, worst, pessimistic)
    return optimistic, pessimistic


@dataclass(frozen=True)
class DirectionRanks:
    """Filtered ranks of the queries of one direction.

    Attributes:
        optimistic: [n] int64 optimistic ranks, in the order of the evaluated triples.
        pessimistic: [n] int64 pessimistic ranks.
    """

    optimistic: torch.Tensor
    pessimistic: torch.Tensor

    @property
    def realistic(self) -> torch.Tensor:
        """[n] float64 realistic ranks, ``(optimistic + pessimistic) / 2``."""
        return (self.optimistic.to(torch.float64) + self.pessimistic.to(torch.float64)) / 2

    def policy(self, name: str) -> torch.Tensor:
        """[n] the ranks under policy ``name`` (one of :data:`POLICIES`)."""
        if name not in POLICIES:
            raise ValueError(f"unknown rank policy {name!r}; expected one of {POLICIES}")
        return getattr(self, name)


@dataclass(frozen=True)
class Ranks:
    """Filtered ranks of evaluated triples, on the CPU.

    Attributes:
        head: ranks of the head-prediction queries ``(?, r, t)``.
        tail: ranks of the tail-prediction queries ``(h, r, ?)``.
    """

    head: DirectionRanks
    tail: DirectionRanks


def _summary(ranks: torch.Tensor) -> dict[str, float]:
    """MRR, MR and Hits@k of ``ranks`` ([q] ranks of any numeric dtype), computed in float64."""
    ranks = ranks.to(torch.float64)
    out = {"mrr": float((1.0 / ranks).mean()), "mr": float(ranks.mean())}
    for k in HITS_AT:
        out[f"hits_at_{k}"] = float((ranks <= k).to(torch.float64).mean())
    return out


def metrics_from_ranks(ranks: Ranks) -> dict[str, float]:
    """The metric dictionary of :meth:`FilteredEvaluator.evaluate` from raw ranks.

    Returns:
        ``{metric}_{policy}_filtered`` over both directions, ``head_…`` / ``tail_…`` per direction and
        ``num_triples`` (see the module docstring for the definitions).
    """
    out: dict[str, float] = {}
    for policy in POLICIES:
        head, tail = ranks.head.policy(policy), ranks.tail.policy(policy)
        groups = (
            ("", torch.cat([head.to(torch.float64), tail.to(torch.float64)])),
            ("head_", head),
            ("tail_", tail),
        )
        for prefix, values in groups:
            for metric, value in _summary(values).items():
                out[f"{prefix}{metric}_{policy}_filtered"] = value
    out["num_triples"] = float(ranks.head.optimistic.numel())
    return out


class FilteredEvaluator:
    """Filtered link-prediction evaluator; the filter index is built once and reused.

    Build it once per dataset with all known triples (train + valid + test) and call :meth:`evaluate` at
    every validation.  The protocol, tie policies, NaN handling and metric definitions are those of the
    module docstring of :mod:`dhns_search.evaluation.ranking`.

    Args:
        known_triples: tensors [n_i, 3] of (head, relation, tail) ids whose triples are filtered out (a
            single tensor is accepted too).
        num_entities: ``N``, the number of entities (the width of the models' score rows).
        batch_size: queries per model call; memory is ``O(batch_size * N)``.

    Raises:
        DataError: a known-triples tensor is not ``[n, 3]`` integer ids, or has an entity id outside
            ``[0, N)`` or a negative relation id.
    """

    def __init__(
        self,
        known_triples: Sequence[torch.Tensor] | torch.Tensor,
        num_entities: int,
        batch_size: int = 256,
    ) -> None:
        if isinstance(known_triples, torch.Tensor):
            known_triples = [known_triples]
        if isinstance(num_entities, bool) or not isinstance(num_entities, int) or num_entities < 1:
            raise ValueError(f"num_entities must be a positive int, got {num_entities!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.num_entities = num_entities
        self.batch_size = batch_size
        self._tails, self._heads = build_filter_indexes(list(known_triples), num_entities)
        self._device_indexes: dict[torch.device, tuple[FilterIndex, FilterIndex]] = {}

    @property
    def num_filter_pairs(self) -> int:
        """Number of distinct (query, true answer) pairs in the tail index (= distinct known triples)."""
        return int(self._tails.answers.numel())

    def _indexes_on(self, device: torch.device) -> tuple[FilterIndex, FilterIndex]:
        """The (tails, heads) indexes on ``device``, copied there once and cached."""
        if device not in self._device_indexes:
            self._device_indexes[device] = (self._tails.to(device), self._heads.to(device))
        return self._device_indexes[device]

    def _scores(self, scores: torch.Tensor, batch: int, device: torch.device, what: str) -> torch.Tensor:
        """Check a model's score matrix ([batch, N] expected) and return it on ``device``."""
        if not isinstance(scores, torch.Tensor) or scores.shape != (batch, self.num_entities):
            shape = list(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"model.{what} returned {shape}, expected [{batch}, {self.num_entities}]")
        return scores.to(device)

    def rank(
        self, model: RankingModel, triples: torch.Tensor, *, device: torch.device | str | None = None
    ) -> Ranks:
        """Filtered optimistic and pessimistic ranks of every triple, in both directions.

        Runs under ``torch.no_grad()``; an ``nn.Module`` model is put in eval mode for the call and its
        previous mode restored afterwards.

        Args:
            model: anything with ``score_tails`` / ``score_heads`` (:class:`RankingModel`).
            triples: [n, 3] (head, relation, tail) ids to evaluate.
            device: where queries, scores and the index live; default: ``triples.device``.

        Returns:
            :class:`Ranks`, on the CPU, in the order of ``triples``.

        Raises:
            DataError: ``triples`` is empty, not ``[n, 3]`` integer ids, or has an entity id out of range.
        """
        check_triples(triples, self.num_entities, "evaluated triples")
        if triples.shape[0] == 0:
            raise DataError("evaluated triples: no triples to evaluate")
        device = torch.device(device) if device is not None else triples.device
        triples = triples.to(device, torch.int64)
        tails_index, heads_index = self._indexes_on(device)

        was_training = isinstance(model, torch.nn.Module) and model.training
        if isinstance(model, torch.nn.Module):
            model.eval()
        parts: dict[str, list[torch.Tensor]] = {"ho": [], "hp": [], "to": [], "tp": []}
        try:
            with torch.no_grad():
                for start in range(0, triples.shape[0], self.batch_size):
                    chunk = triples[start : start + self.batch_size]
                    h, r, t = chunk[:, 0], chunk[:, 1], chunk[:, 2]
                    b = chunk.shape[0]

                    scores = self._scores(model.score_tails(h, r), b, device, "score_tails")
                    rows, cols = tails_index.expand(tails_index.query_keys(r, h))
                    opt, pess = filtered_ranks(scores, t, rows, cols)
                    parts["to"].append(opt)
                    parts["tp"].append(pess)
                    del scores

                    scores = self._scores(model.score_heads(r, t), b, device, "score_heads")
                    rows, cols = heads_index.expand(heads_index.query_keys(r, t))
                    opt, pess = filtered_ranks(scores, h, rows, cols)
                    parts["ho"].append(opt)
                    parts["hp"].append(pess)
                    del scores
        finally:
            if was_training:
                model.train()  # type: ignore[union-attr]

        cat = {key: torch.cat(values).cpu() for key, values in parts.items()}
        return Ranks(
            head=DirectionRanks(optimistic=cat["ho"], pessimistic=cat["hp"]),
            tail=DirectionRanks(optimistic=cat["to"], pessimistic=cat["tp"]),
        )

    def evaluate(
        self, model: RankingModel, triples: torch.Tensor, *, device: torch.device | str | None = None
    ) -> dict[str, float]:
        """Filtered MRR, MR and Hits@{1,3,10} of ``triples`` under the three tie policies.

        Args:
            model: anything with ``score_tails`` / ``score_heads`` (:class:`RankingModel`).
            triples: [n, 3] (head, relation, tail) ids to evaluate.
            device: where queries, scores and the index live; default: ``triples.device``.

        Returns:
            ``{metric}_{policy}_filtered`` over all ``2n`` queries, the same with ``head_`` / ``tail_``
            prefixes per direction (``head_`` = predicting the head), and ``num_triples``; metrics are
            ``mrr``, ``mr``, ``hits_at_1``, ``hits_at_3``, ``hits_at_10``, policies ``optimistic``,
            ``pessimistic``, ``realistic`` (realistic MRR = mean of ``1 / ((opt + pess) / 2)``).
        """
        return metrics_from_ranks(self.rank(model, triples, device=device))
