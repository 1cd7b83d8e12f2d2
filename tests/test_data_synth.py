"""The embedded synthetic graph: determinism, structure, learnability, informative features."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dhns_search.config.models import SynthConfig
from dhns_search.data import load_dataset, relation_categories, synthesize
from dhns_search.data.synth import SyntheticGraph, generate
from dhns_search.errors import ConfigError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_graph(tmp_path: Path, synth_dir: Path) -> None:
    again = synthesize(SynthConfig(), tmp_path / "again")
    first = _files(synth_dir)
    assert set(first) == {
        "entity2id.txt", "relation2id.txt", "train2id.txt", "valid2id.txt", "test2id.txt",
        "features/visual.npy", "features/textual.npy", "synth.json",
    }
    assert _files(again) == first
    other = _files(synthesize(SynthConfig(seed=1), tmp_path / "other"))
    assert other["train2id.txt"] != first["train2id.txt"]
    assert other["features/visual.npy"] != first["features/visual.npy"]


def test_default_graph_shape_names_and_splits(synth_graph: SyntheticGraph, synth_dir: Path) -> None:
    cfg = SynthConfig()
    ds = load_dataset(synth_dir)
    assert ds.warnings == []  # no duplicates, every evaluation entity occurs in training
    assert ds.num_entities == 600 and ds.num_relations == 12
    assert ds.entity_names[12] == "entity_0012" and ds.relation_names[3] == "rel_03"
    total = len(ds.train) + len(ds.valid) + len(ds.test)
    assert total == cfg.num_triples
    all_triples = torch.cat([ds.train, ds.valid, ds.test])
    assert torch.unique(all_triples, dim=0).shape[0] == total
    assert (all_triples[:, 0] != all_triples[:, 2]).all()  # no self-loops
    # splits close to the fractions (a few evaluation triples move to training)
    assert 0.08 * total <= len(ds.valid) <= 0.1 * total + 1
    assert 0.08 * total <= len(ds.test) <= 0.1 * total + 1
    assert torch.equal(ds.train, torch.from_numpy(synth_graph.train))


def test_relation_categories_are_all_present(synth_graph: SyntheticGraph) -> None:
    triples = torch.from_numpy(np.concatenate([synth_graph.train, synth_graph.valid, synth_graph.test]))
    measured = relation_categories(triples, 12)
    assert sorted(set(measured)) == ["1-1", "1-N", "N-1", "N-N"]
    agree = sum(a == b for a, b in zip(measured, synth_graph.categories))
    assert agree >= 10, (measured, synth_graph.categories)


def test_features_have_missing_rows(synth_dir: Path) -> None:
    ds = load_dataset(synth_dir)
    visual, textual = ds.features["visual"], ds.features["textual"]
    assert visual.values.shape == (600, 64) and textual.values.shape == (600, 48)
    assert visual.values.dtype == torch.float32
    assert visual.present == textual.present == 600 - round(0.15 * 600)
    assert not torch.equal(visual.mask, textual.mask)  # missing independently per modality


def test_degrees_are_skewed(synth_graph: SyntheticGraph) -> None:
    degree = np.bincount(synth_graph.train[:, [0, 2]].ravel(), minlength=600)
    assert (degree <= 3).sum() >= 30  # entities whose structure the triples barely show
    assert degree.max() >= 8 * np.median(degree)


def test_features_carry_the_hidden_factors(synth_graph: SyntheticGraph) -> None:
    from sklearn.linear_model import Ridge, RidgeClassifier

    present = synth_graph.visual.any(axis=1)
    x, z, y = synth_graph.visual[present], synth_graph.latent[present], synth_graph.entity_types[present]
    half = len(x) // 2
    r2 = Ridge(alpha=1.0).fit(x[:half], z[:half]).score(x[half:], z[half:])
    assert r2 > 0.6, r2  # chance: <= 0
    num_types = int(synth_graph.entity_types.max()) + 1
    accuracy = RidgeClassifier(alpha=1.0).fit(x[:half], y[:half]).score(x[half:], y[half:])
    assert accuracy > 0.8, accuracy  # chance: 1 / num_types
    assert num_types >= 4


def _filtered_mrr(scores: torch.Tensor, queries: torch.Tensor, known: torch.Tensor) -> float:
    """scores: [Q, N]; queries: [Q, 3] (subject, relation, answer); known: bool [Q, N] other true answers."""
    target = scores.gather(1, queries[:, 2:3])
    better = (scores > target) & ~known
    return float((1.0 / (better.sum(1).float() + 1)).mean())


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine, two threads contend and run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_small_distmult_learns_the_graph_far_above_chance(synth_dir: Path, one_thread) -> None:
    """A tiny DistMult (1-N cross-entropy, reciprocal relations) trained for a few seconds."""
    start = time.perf_counter()
    ds = load_dataset(synth_dir)
    n, r = ds.num_entities, ds.num_relations

    def with_reciprocals(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, torch.stack([t[:, 2], t[:, 1] + r, t[:, 0]], 1)])

    train = with_reciprocals(ds.train)
    gen = torch.Generator().manual_seed(0)
    ent = torch.nn.Parameter(0.1 * torch.randn(n, 64, generator=gen))
    rel = torch.nn.Parameter(0.1 * torch.randn(2 * r, 64, generator=gen))
    opt = torch.optim.Adam([ent, rel], lr=0.01)
    for _ in range(12):
        for batch in train[torch.randperm(len(train), generator=gen)].split(1024):
            scores = (ent[batch[:, 0]] * rel[batch[:, 1]]) @ ent.T
            loss = torch.nn.functional.cross_entropy(scores, batch[:, 2])
            loss = loss + 1e-4 * (ent.pow(2).sum() + rel.pow(2).sum()) / len(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        everything = with_reciprocals(torch.cat([ds.train, ds.valid, ds.test]))
        queries = with_reciprocals(ds.valid)
        # known[q, e]: (subject, relation, e) is a true triple
        key = everything[:, 0] * (2 * r) + everything[:, 1]
        qkey = queries[:, 0] * (2 * r) + queries[:, 1]
        match = qkey[:, None] == key[None, :]
        known = torch.zeros(len(queries), n, dtype=torch.bool)
        rows, cols = match.nonzero(as_tuple=True)
        known[rows, everything[cols, 2]] = True
        known[torch.arange(len(queries)), queries[:, 2]] = False
        mrr = _filtered_mrr((ent[queries[:, 0]] * rel[queries[:, 1]]) @ ent.T, queries, known)
        random_mrr = _filtered_mrr(torch.rand(len(queries), n, generator=gen), queries, known)
    chance = sum(1 / k for k in range(1, n + 1)) / n  # expected MRR of a random ranking
    assert random_mrr < 2 * chance
    assert mrr > 6 * chance, (mrr, chance)  # about 0.1 in practice, chance about 0.012
    assert time.perf_counter() - start < 30


def test_small_and_impossible_configurations() -> None:
    tiny = generate(SynthConfig(num_entities=10, num_relations=1, num_triples=12, seed=5))
    assert len(tiny.train) + len(tiny.valid) + len(tiny.test) == 12
    assert tiny.entity_names[9] == "entity_0009"
    many = generate(SynthConfig(num_entities=10_001, num_relations=3, num_triples=200))
    assert many.entity_names[-1] == "entity_10000" and len(many.latent) == 10_001
    with pytest.raises(ConfigError, match=r"data.synth.num_triples: .*5,000.*ask for fewer triples"):
        generate(SynthConfig(num_entities=10, num_relations=2, num_triples=5000))


def test_chance_formula_is_what_the_learnability_test_compares_to() -> None:
    n = 600
    chance = sum(1 / k for k in range(1, n + 1)) / n
    assert math.isclose(chance, (math.log(n) + 0.5772) / n, rel_tol=0.01)


def test_tiny_fractions_still_give_non_empty_splits(tmp_path) -> None:
    """round(0.001 * 200) is 0; an empty split would be refused by the loader, so each gets one triple."""
    cfg = SynthConfig(num_entities=20, num_relations=2, num_triples=200, valid_fraction=0.001, test_fraction=0.001)
    graph = generate(cfg)
    assert (len(graph.train), len(graph.valid), len(graph.test)) == (198, 1, 1)
    synthesize(cfg, tmp_path / "g")
    assert len(load_dataset(tmp_path / "g").valid) == 1
