"""Tests of the filtered link-prediction evaluator against a slow, obviously correct reference."""

from __future__ import annotations

import math

import pytest
import torch

from dhns_search.errors import DataError
from dhns_search.evaluation import (
    HITS_AT,
    METRICS,
    POLICIES,
    FilteredEvaluator,
    FilterIndex,
    RankingModel,
    build_filter_indexes,
    filtered_ranks,
)

NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------------
# test models (model code stays out of the library)


class TableScorer:
    """Scores read from a dense table: ``score(h, r, t) = table[h, r, t]``."""

    def __init__(self, table: torch.Tensor) -> None:
        """Args: table: [N, R, N] scores, any float dtype, NaN / inf allowed."""
        self.table = table

    def score_tails(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """[B, N] scores of (h[i], r[i], e) for every entity e."""
        return self.table[h, r, :]

    def score_heads(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[B, N] scores of (e, r[i], t[i]) for every entity e."""
        return self.table[:, r, t].T


class EmbeddingDistMult(torch.nn.Module):
    """DistMult ``<e_h, w_r, e_t>`` with a dropout, recording whether it scored in training mode."""

    def __init__(self, num_entities: int, num_relations: int, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.ent = torch.nn.Parameter(torch.randn(num_entities, dim, generator=generator))
        self.rel = torch.nn.Parameter(torch.randn(num_relations, dim, generator=generator))
        self.dropout = torch.nn.Dropout(0.5)
        self.modes: list[bool] = []
        self.grad_enabled: list[bool] = []

    def _record(self) -> None:
        self.modes.append(self.training)
        self.grad_enabled.append(torch.is_grad_enabled())

    def score_tails(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """[B, N] scores for the tail queries (h[i], r[i], ?)."""
        self._record()
        return self.dropout(self.ent[h] * self.rel[r]) @ self.ent.T

    def score_heads(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[B, N] scores for the head queries (?, r[i], t[i])."""
        self._record()
        return self.dropout(self.ent[t] * self.rel[r]) @ self.ent.T


# --------------------------------------------------------------------------------------------------
# the slow reference


def _value(x: float) -> float:
    """NaN counts as -inf for candidates."""
    return NEG_INF if math.isnan(x) else x


def reference_ranks(model, triples: list[tuple[int, int, int]], known: set[tuple[int, int, int]], n: int):
    """Per-triple loop over all candidates with set-based filtering.

    Returns ``{"head": [(opt, pess), ...], "tail": [...]}``.
    """
    out: dict[str, list[tuple[int, int]]] = {"head": [], "tail": []}
    for h, r, t in triples:
        for direction in ("tail", "head"):
            if direction == "tail":
                row = model.score_tails(torch.tensor([h]), torch.tensor([r]))[0].tolist()
                true = t
                candidates = [e for e in range(n) if e == t or (h, r, e) not in known]
            else:
                row = model.score_heads(torch.tensor([r]), torch.tensor([t]))[0].tolist()
                true = h
                candidates = [e for e in range(n) if e == h or (e, r, t) not in known]
            s = row[true]
            if math.isnan(s):
                opt = pess = len(candidates)
            else:
                opt = 1 + sum(1 for e in candidates if e != true and _value(row[e]) > s)
                pess = 1 + sum(1 for e in candidates if e != true and _value(row[e]) >= s)
            out[direction].append((opt, pess))
    return out


def reference_metrics(ranks: dict[str, list[tuple[int, int]]]) -> dict[str, float]:
    """Metric dict from reference ranks, with plain Python arithmetic."""

    def rank_list(pairs: list[tuple[int, int]], policy: str) -> list[float]:
        if policy == "optimistic":
            return [float(o) for o, _ in pairs]
        if policy == "pessimistic":
            return [float(p) for _, p in pairs]
        return [(o + p) / 2 for o, p in pairs]

    out: dict[str, float] = {}
    for policy in POLICIES:
        head, tail = rank_list(ranks["head"], policy), rank_list(ranks["tail"], policy)
        for prefix, values in (("", head + tail), ("head_", head), ("tail_", tail)):
            q = len(values)
            out[f"{prefix}mrr_{policy}_filtered"] = sum(1 / v for v in values) / q
            out[f"{prefix}mr_{policy}_filtered"] = sum(values) / q
            for k in HITS_AT:
                out[f"{prefix}hits_at_{k}_{policy}_filtered"] = sum(1 for v in values if v <= k) / q
    out["num_triples"] = float(len(ranks["head"]))
    return out


def random_graph(seed: int, n: int, num_rel: int, num_triples: int):
    """Random (train, valid, test) triples, with repeats, on ``n`` entities."""
    g = torch.Generator().manual_seed(seed)
    triples = torch.stack(
        [
            torch.randint(0, n, (num_triples,), generator=g),
            torch.randint(0, num_rel, (num_triples,), generator=g),
            torch.randint(0, n, (num_triples,), generator=g),
        ],
        dim=1,
    )
    a, b = int(0.7 * num_triples), int(0.85 * num_triples)
    return triples[:a], triples[a:b], triples[b:]


def tied_table(seed: int, n: int, num_rel: int, *, levels: int, nan_frac: float, dtype=torch.float64):
    """[n, num_rel, n] integer-valued scores with few distinct values (many ties), some NaN and -inf."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(0, levels, (n, num_rel, n), generator=g).to(dtype)
    u = torch.rand(n, num_rel, n, generator=g)
    table[u < nan_frac] = float("nan")
    table[(u >= nan_frac) & (u < 2 * nan_frac)] = NEG_INF
    table[(u >= 2 * nan_frac) & (u < 2.5 * nan_frac)] = float("inf")
    return table


def as_set(*parts: torch.Tensor) -> set[tuple[int, int, int]]:
    return {tuple(int(x) for x in row) for p in parts for row in p}


def assert_metrics_match(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9, rel=0), key


# --------------------------------------------------------------------------------------------------
# cross-checks against the reference


@pytest.mark.parametrize(
    ("seed", "n", "num_rel", "num_triples", "levels", "nan_frac"),
    [
        (0, 12, 2, 60, 3, 0.0),
        (1, 25, 3, 120, 2, 0.05),
        (2, 40, 4, 200, 5, 0.1),
        (3, 7, 1, 40, 2, 0.2),  # dense graph: many filtered answers per query
        (4, 30, 3, 90, 1000, 0.02),  # almost no ties
    ],
)
def test_matches_reference_on_random_graphs(seed, n, num_rel, num_triples, levels, nan_frac):
    train, valid, test = random_graph(seed, n, num_rel, num_triples)
    model = TableScorer(tied_table(seed + 100, n, num_rel, levels=levels, nan_frac=nan_frac))
    evaluator = FilteredEvaluator([train, valid, test], n, batch_size=8)
    known = as_set(train, valid, test)

    # the test split, plus triples that are not known at all (the evaluator must not assume they are)
    g = torch.Generator().manual_seed(seed + 7)
    extra = torch.stack(
        [
            torch.randint(0, n, (15,), generator=g),
            torch.randint(0, num_rel, (15,), generator=g),
            torch.randint(0, n, (15,), generator=g),
        ],
        dim=1,
    )
    for triples in (test, extra):
        listed = [tuple(int(x) for x in row) for row in triples]
        want_ranks = reference_ranks(model, listed, known, n)
        got = evaluator.rank(model, triples)
        assert got.tail.optimistic.tolist() == [o for o, _ in want_ranks["tail"]]
        assert got.tail.pessimistic.tolist() == [p for _, p in want_ranks["tail"]]
        assert got.head.optimistic.tolist() == [o for o, _ in want_ranks["head"]]
        assert got.head.pessimistic.tolist() == [p for _, p in want_ranks["head"]]
        assert_metrics_match(evaluator.evaluate(model, triples), reference_metrics(want_ranks))


def test_matches_reference_with_float32_and_no_filter():
    n, num_rel = 20, 3
    _, _, test = random_graph(11, n, num_rel, 80)
    model = TableScorer(tied_table(12, n, num_rel, levels=3, nan_frac=0.05, dtype=torch.float32))
    evaluator = FilteredEvaluator([], n)  # nothing known: raw ranking
    listed = [tuple(int(x) for x in row) for row in test]
    want = reference_metrics(reference_ranks(model, listed, set(), n))
    assert_metrics_match(evaluator.evaluate(model, test), want)


def test_metric_names_follow_the_architecture():
    n = 6
    triples = torch.tensor([[0, 0, 1], [2, 0, 3]])
    metrics = FilteredEvaluator([triples], n).evaluate(TableScorer(torch.zeros(n, 1, n)), triples)
    expected = {
        f"{prefix}{metric}_{policy}_filtered"
        for prefix in ("", "head_", "tail_")
        for metric in METRICS
        for policy in POLICIES
    }
    assert set(metrics) == expected | {"num_triples"}
    assert metrics["num_triples"] == 2.0
    assert all(isinstance(v, float) for v in metrics.values())


# --------------------------------------------------------------------------------------------------
# hand-made cases


def test_constant_scorer_optimistic_one_pessimistic_worst():
    n = 10
    known = torch.tensor([[0, 0, 1], [0, 0, 2], [0, 0, 3], [4, 0, 3], [5, 0, 1]])
    test = torch.tensor([[0, 0, 1]])
    # tail query (0, 0, ?): other true tails {2, 3} -> 8 candidates; head query (?, 0, 1): other true
    # heads {5} -> 9 candidates.  A constant scorer ties everything.
    metrics = FilteredEvaluator([known], n).evaluate(TableScorer(torch.full((n, 1, n), 0.25)), test)
    assert metrics["mrr_optimistic_filtered"] == 1.0
    assert metrics["hits_at_1_optimistic_filtered"] == 1.0
    assert metrics["mr_optimistic_filtered"] == 1.0
    assert metrics["tail_mr_pessimistic_filtered"] == 8.0
    assert metrics["head_mr_pessimistic_filtered"] == 9.0
    assert metrics["mrr_pessimistic_filtered"] == pytest.approx((1 / 8 + 1 / 9) / 2, abs=1e-12)
    assert metrics["hits_at_10_pessimistic_filtered"] == 1.0
    assert metrics["hits_at_3_pessimistic_filtered"] == 0.0
    # realistic ranks 4.5 and 5: MRR is the mean of 1 / realistic rank, not the mean of the two MRRs
    assert metrics["mr_realistic_filtered"] == pytest.approx((4.5 + 5) / 2, abs=1e-12)
    assert metrics["mrr_realistic_filtered"] == pytest.approx((1 / 4.5 + 1 / 5) / 2, abs=1e-12)
    mean_of_mrrs = (metrics["mrr_optimistic_filtered"] + metrics["mrr_pessimistic_filtered"]) / 2
    assert abs(metrics["mrr_realistic_filtered"] - mean_of_mrrs) > 0.1


def test_constant_scorer_pessimistic_mrr_on_random_graph():
    n, num_rel = 50, 3
    train, valid, test = random_graph(21, n, num_rel, 400)
    known = as_set(train, valid, test)
    metrics = FilteredEvaluator([train, valid, test], n, batch_size=16).evaluate(
        TableScorer(torch.zeros(n, num_rel, n)), test
    )
    # pessimistic rank = number of candidates = N - (other true answers)
    inverse = []
    for h, r, t in test.tolist():
        inverse.append(1 / (n - sum(1 for e in range(n) if e != t and (h, r, e) in known)))
        inverse.append(1 / (n - sum(1 for e in range(n) if e != h and (e, r, t) in known)))
    assert metrics["mrr_optimistic_filtered"] == 1.0
    assert metrics["mrr_pessimistic_filtered"] == pytest.approx(sum(inverse) / len(inverse), abs=1e-12)
    assert metrics["mrr_pessimistic_filtered"] < 1 / (n - 10)  # close to 1/N, as expected


def test_perfect_scorer_gets_mrr_one_under_every_policy():
    n, num_rel = 30, 4
    train, valid, test = random_graph(5, n, num_rel, 150)
    table = torch.zeros(n, num_rel, n)
    allt = torch.cat([train, valid, test])
    table[allt[:, 0], allt[:, 1], allt[:, 2]] = 1.0
    metrics = FilteredEvaluator([train, valid, test], n).evaluate(TableScorer(table), test)
    for prefix in ("", "head_", "tail_"):
        for policy in POLICIES:
            assert metrics[f"{prefix}mrr_{policy}_filtered"] == 1.0
            assert metrics[f"{prefix}mr_{policy}_filtered"] == 1.0
            assert metrics[f"{prefix}hits_at_1_{policy}_filtered"] == 1.0


def test_perfect_scorer_without_filter_is_not_perfect():
    """The same perfect scorer evaluated unfiltered: other true answers tie, so pessimistic MRR < 1."""
    n = 5
    known = torch.tensor([[0, 0, 1], [0, 0, 2]])
    table = torch.zeros(n, 1, n)
    table[0, 0, 1] = table[0, 0, 2] = 1.0
    filtered = FilteredEvaluator([known], n).evaluate(TableScorer(table), known)
    raw = FilteredEvaluator([], n).evaluate(TableScorer(table), known)
    assert filtered["tail_mrr_pessimistic_filtered"] == 1.0
    assert raw["tail_mrr_pessimistic_filtered"] == 0.5
    assert raw["tail_mrr_optimistic_filtered"] == 1.0


def test_nan_scores_rank_last():
    n = 6
    known = torch.tensor([[0, 0, 1], [0, 0, 4]])
    # tail query (0, 0, ?): true 1, entity 4 filtered -> 5 candidates
    rows = {
        "finite true, NaN candidates": ([float("nan"), 0.5, float("nan"), float("nan"), 9.0, -1.0], 1, 1),
        "NaN true, finite candidates": ([0.1, float("nan"), -5.0, -9.0, 9.0, -1.0], 5, 5),
        "NaN everywhere": ([float("nan")] * n, 5, 5),
        "-inf true, NaN candidates tie": ([float("nan"), NEG_INF, 0.0, float("nan"), 9.0, NEG_INF], 2, 5),
    }
    for name, (row, want_opt, want_pess) in rows.items():
        table = torch.zeros(n, 1, n)
        table[0, 0, :] = torch.tensor(row)
        ranks = FilteredEvaluator([known], n).rank(TableScorer(table), torch.tensor([[0, 0, 1]]))
        assert ranks.tail.optimistic.tolist() == [want_opt], name
        assert ranks.tail.pessimistic.tolist() == [want_pess], name


def test_nan_never_ranks_first_even_for_a_nan_model():
    n = 8
    triples = torch.tensor([[0, 0, 1], [2, 0, 3]])
    metrics = FilteredEvaluator([triples], n).evaluate(
        TableScorer(torch.full((n, 1, n), float("nan"))), triples
    )
    for policy in POLICIES:
        assert metrics[f"mr_{policy}_filtered"] == 8.0
        assert metrics[f"hits_at_10_{policy}_filtered"] == 1.0
        assert metrics[f"hits_at_3_{policy}_filtered"] == 0.0


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_batch_size_independence(batch_size):
    n, num_rel = 35, 3
    train, valid, test = random_graph(9, n, num_rel, 250)
    model = TableScorer(tied_table(10, n, num_rel, levels=3, nan_frac=0.05))
    reference = FilteredEvaluator([train, valid, test], n, batch_size=256).evaluate(model, test)
    got = FilteredEvaluator([train, valid, test], n, batch_size=batch_size).evaluate(model, test)
    assert got == reference  # bit-identical, not merely close


class RecordingTable(TableScorer):
    """A table scorer that records the arguments of every call."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(table)
        self.calls: list[tuple[str, list[int], list[int]]] = []

    def score_tails(self, h, r):
        self.calls.append(("score_tails", h.tolist(), r.tolist()))
        return super().score_tails(h, r)

    def score_heads(self, r, t):
        self.calls.append(("score_heads", r.tolist(), t.tolist()))
        return super().score_heads(r, t)


def test_head_and_tail_directions_are_not_swapped():
    n, num_rel = 6, 3
    triple = torch.tensor([[0, 2, 1]])
    table = torch.zeros(n, num_rel, n)
    table[0, 2, 1] = 5.0
    table[0, 2, 2] = 6.0  # tail query (0, 2, ?): entities 2 and 3 beat the true tail 1 -> rank 3
    table[0, 2, 3] = 7.0
    table[4, 1, 1] = 9.0  # another relation: must not influence the head query (?, 2, 1)
    model = RecordingTable(table)
    metrics = FilteredEvaluator([triple], n).evaluate(model, triple)
    assert model.calls == [("score_tails", [0], [2]), ("score_heads", [2], [1])]
    assert metrics["tail_mrr_optimistic_filtered"] == pytest.approx(1 / 3, abs=1e-12)
    assert metrics["head_mrr_optimistic_filtered"] == 1.0
    assert metrics["mrr_optimistic_filtered"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-12)
    assert metrics["tail_hits_at_1_optimistic_filtered"] == 0.0
    assert metrics["head_hits_at_1_optimistic_filtered"] == 1.0


def test_head_filter_uses_heads_and_tail_filter_uses_tails():
    n = 6
    # known: (0, 0, 1) test; (0, 0, 2) is another true tail of (0, 0); (3, 0, 1) another true head of
    # (0, 1); (1, 0, 0) is the reverse triple and filters nothing.
    known = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 0, 1], [1, 0, 0]])
    table = torch.zeros(n, 1, n)
    table[0, 0, 1] = 1.0  # true triple
    table[0, 0, 2] = table[0, 0, 3] = 2.0  # tail side: 2 is filtered, 3 is not -> rank 2
    table[3, 0, 1] = table[4, 0, 1] = table[1, 0, 1] = 2.0  # head side: 3 filtered, 4 and 1 not -> rank 3
    ranks = FilteredEvaluator([known], n).rank(TableScorer(table), known[:1])
    assert ranks.tail.optimistic.tolist() == [2]
    assert ranks.head.optimistic.tolist() == [3]


# --------------------------------------------------------------------------------------------------
# model handling, index and errors


def test_nn_module_is_scored_in_eval_mode_without_grad_and_mode_restored():
    g = torch.Generator().manual_seed(0)
    n, num_rel = 40, 3
    train, valid, test = random_graph(13, n, num_rel, 120)
    model = EmbeddingDistMult(n, num_rel, 16, g)
    assert isinstance(model, RankingModel)
    model.train()
    evaluator = FilteredEvaluator([train, valid, test], n, batch_size=5)
    first = evaluator.evaluate(model, test)
    second = evaluator.evaluate(model, test)
    assert first == second  # dropout off: deterministic
    assert model.training  # restored
    assert model.modes and not any(model.modes)
    assert not any(model.grad_enabled)
    ranks = evaluator.rank(model, test)
    for direction in (ranks.head, ranks.tail):
        assert bool((direction.optimistic >= 1).all())
        assert bool((direction.pessimistic >= direction.optimistic).all())
        assert bool((direction.pessimistic <= n).all())
    model.eval()
    evaluator.evaluate(model, test)
    assert not model.training  # a model in eval mode stays there


def test_filtered_ranks_ignores_the_target_in_the_filter_list():
    scores = torch.tensor([[3.0, 3.0, 1.0, 3.0]])
    target = torch.tensor([0])
    rows = torch.tensor([0, 0])
    cols = torch.tensor([0, 3])  # the target itself and entity 3
    opt, pess = filtered_ranks(scores, target, rows, cols)
    assert opt.tolist() == [1]
    assert pess.tolist() == [2]  # tie with entity 1 only


def test_filter_index_build_and_expand():
    known = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 4], [3, 0, 2], [0, 0, 4]])
    tails, heads = build_filter_indexes([known[:2], known[2:]], 5)
    assert isinstance(tails, FilterIndex)
    assert tails.answers.numel() == 4  # the repeated triple counted once
    keys = tails.query_keys(torch.tensor([1, 0, 2, 7]), torch.tensor([0, 3, 0, 0]))
    rows, cols = tails.expand(keys)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 2), (0, 4), (1, 2)]
    _, counts = tails.lookup(keys)
    assert counts.tolist() == [2, 1, 0, 0]  # unknown relations 2 and 7 have no answers
    rows, cols = heads.expand(heads.query_keys(torch.tensor([1, 0]), torch.tensor([2, 2])))
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 3)]
    empty_tails, _ = build_filter_indexes([], 5)
    rows, cols = empty_tails.expand(empty_tails.query_keys(torch.tensor([0]), torch.tensor([1])))
    assert rows.numel() == 0 and cols.numel() == 0


def test_index_is_built_once_and_reused():
    n = 10
    known = torch.tensor([[0, 0, 1], [0, 0, 2]])
    evaluator = FilteredEvaluator([known], n)
    model = TableScorer(torch.zeros(n, 1, n))
    evaluator.evaluate(model, known)
    cached = evaluator._indexes_on(torch.device("cpu"))
    evaluator.evaluate(model, known, device="cpu")
    assert evaluator._indexes_on(torch.device("cpu")) is cached
    assert evaluator.num_filter_pairs == 2


@pytest.mark.parametrize(
    ("triples", "message"),
    [
        (torch.tensor([[0, 0]]), "shape"),
        (torch.tensor([[0.0, 0.0, 1.0]]), "integer"),
        (torch.tensor([[0, 0, 10]]), "entity id 10"),
        (torch.tensor([[-1, 0, 1]]), "entity id -1"),
        (torch.tensor([[0, -2, 1]]), "relation"),
    ],
)
def test_bad_triples_raise_data_error(triples, message):
    with pytest.raises(DataError, match=message):
        FilteredEvaluator([triples], 10)
    evaluator = FilteredEvaluator([], 10)
    with pytest.raises(DataError, match=message):
        evaluator.evaluate(TableScorer(torch.zeros(10, 1, 10)), triples)


def test_empty_evaluation_and_bad_arguments():
    evaluator = FilteredEvaluator([], 4)
    with pytest.raises(DataError, match="no triples"):
        evaluator.evaluate(TableScorer(torch.zeros(4, 1, 4)), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size"):
        FilteredEvaluator([], 4, batch_size=0)
    with pytest.raises(ValueError, match="num_entities"):
        FilteredEvaluator([], 0)


def test_wrong_score_shape_is_reported():
    class Broken:
        def score_tails(self, h, r):
            return torch.zeros(h.numel(), 3)

        def score_heads(self, r, t):
            return torch.zeros(t.numel(), 4)

    with pytest.raises(ValueError, match=r"score_tails returned \[1, 3\], expected \[1, 4\]"):
        FilteredEvaluator([], 4).evaluate(Broken(), torch.tensor([[0, 0, 1]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_matches_cpu():
    n, num_rel = 30, 3
    train, valid, test = random_graph(31, n, num_rel, 150)
    table = tied_table(32, n, num_rel, levels=3, nan_frac=0.05)
    evaluator = FilteredEvaluator([train, valid, test], n, batch_size=7)
    on_cpu = evaluator.evaluate(TableScorer(table), test)
    on_gpu = evaluator.evaluate(TableScorer(table.cuda()), test.cuda())
    assert on_gpu == on_cpu
    assert evaluator.evaluate(TableScorer(table.cuda()), test, device="cuda") == on_cpu
