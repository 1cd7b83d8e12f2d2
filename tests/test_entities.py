"""Multimodal entities (modality vectors, missing rows, fusion) and the KGE model built on them."""

import io
import math
from types import SimpleNamespace

import pytest
import torch

from dhns_search.config.models import ModelConfig, RunConfig
from dhns_search.errors import ConfigError, DataError
from dhns_search.models import KGEModel, MultimodalEntities

N, W = 10, 6


def _features(n=N, seed=0):
    """Two duck-typed feature tables (values + mask), given in reverse name order on purpose."""
    g = torch.Generator().manual_seed(seed)
    visual_mask = torch.ones(n, dtype=torch.bool)
    visual_mask[[1, 4]] = False
    return {
        "visual": SimpleNamespace(values=torch.randn(n, 4, generator=g), mask=visual_mask),
        "textual": SimpleNamespace(
            values=torch.randn(n, 3, generator=g), mask=torch.ones(n, dtype=torch.bool)
        ),
    }


def _entities(**kw):
    kw.setdefault("init_range", 0.5)
    torch.manual_seed(0)
    return MultimodalEntities(N, W, _features(), **kw)


def test_modality_order_and_index():
    ent = _entities()
    assert ent.modalities == ["structural", "textual", "visual"]
    assert [ent.modality_index(m) for m in ent.modalities] == [0, 1, 2]
    with pytest.raises(ConfigError, match="unknown modality 'audio'"):
        ent.modality_index("audio")


def test_modality_vectors_are_projections_or_the_missing_vector():
    ent = _entities()
    ids = torch.tensor([[0, 1], [4, 7]])
    vec, mask = ent.modality_vectors(ids), ent.modality_mask(ids)
    assert vec.shape == (2, 2, 3, W) and mask.shape == (2, 2, 3)
    assert mask.tolist() == [
        [[True, True, True], [True, True, False]],
        [[True, True, False], [True, True, True]],
    ]
    vis = ent.features["visual"]
    torch.testing.assert_close(vec[0, 0, 2], vis.proj(vis.values[0]))
    torch.testing.assert_close(vec[0, 1, 2], vis.missing)  # entity 1 has no visual row
    torch.testing.assert_close(vec[1, 0, 2], vis.missing)
    torch.testing.assert_close(vec[1, 1, 0], ent.structural[7])
    txt = ent.features["textual"]
    torch.testing.assert_close(vec[1, 1, 1], txt.proj(txt.values[7]))


def test_structural_init_range():
    ent = _entities(init_range=0.05)
    assert ent.structural.abs().max() < 0.05
    assert ent.structural.std() > 0.01  # actually spread over the range


def test_attention_fusion_matches_the_formula_and_ignores_missing_modalities():
    ent = _entities()
    ids = torch.tensor([0, 1])
    vec, mask = ent.modality_vectors(ids), ent.modality_mask(ids)
    fused = ent(ids)
    for i in range(2):
        avail = mask[i]
        logits = torch.tanh(vec[i, avail]) @ ent.attention
        want = (torch.softmax(logits, 0).unsqueeze(-1) * vec[i, avail]).sum(0)
        torch.testing.assert_close(fused[i], want)
    # entity 1's visual slot is masked out: changing it does not change the fused vector
    other = vec.clone()
    other[1, 2] += 100.0
    torch.testing.assert_close(ent.fuse(other, mask)[1], fused[1])
    assert not torch.allclose(ent.fuse(other, None)[1], fused[1])  # without a mask it counts


def test_mean_and_none_fusion():
    ent = _entities(fusion="mean")
    ids = torch.tensor([1, 2])
    vec = ent.modality_vectors(ids)
    fused = ent(ids)
    torch.testing.assert_close(fused[0], vec[0, :2].mean(0))  # visual missing for entity 1
    torch.testing.assert_close(fused[1], vec[1].mean(0))
    assert ent.attention is None

    plain = _entities(fusion="none")
    torch.testing.assert_close(plain(ids), plain.structural[ids])
    torch.testing.assert_close(plain.fuse(plain.modality_vectors(ids)), plain.structural[ids])


def test_all_masked_rows_stay_finite():
    for fusion in ("attention", "mean"):
        ent = _entities(fusion=fusion)
        vec = torch.randn(2, 3, W)
        out = ent.fuse(vec, torch.zeros(2, 3, dtype=torch.bool))
        assert torch.isfinite(out).all(), fusion


def test_normalize_fused_and_modality_vectors():
    ent = _entities(normalize=True, normalize_modalities=True)
    ids = torch.arange(N)
    torch.testing.assert_close(ent(ids).norm(dim=-1), torch.ones(N))
    torch.testing.assert_close(ent.modality_vectors(ids).norm(dim=-1), torch.ones(N, 3))
    raw = _entities()
    assert not torch.allclose(raw(ids).norm(dim=-1), torch.ones(N))


def test_frozen_features_are_buffers_and_finetuned_ones_learn():
    frozen = _entities()
    vis = frozen.features["visual"]
    assert not isinstance(vis.values, torch.nn.Parameter) and not vis.values.requires_grad
    assert not any(k.endswith("values") for k in frozen.state_dict())  # data, not checkpoint state
    frozen(torch.arange(N)).sum().backward()
    assert vis.proj.weight.grad is not None and frozen.attention.grad is not None

    tuned = _entities(feature_mode="finetune")
    tuned(torch.tensor([0, 2])).sum().backward()
    grad = tuned.features["visual"].values.grad
    assert grad is not None and grad[0].abs().sum() > 0 and grad[3].abs().sum() == 0
    assert "features.visual.values" in tuned.state_dict()


def test_all_fused_matches_forward_and_its_cache_follows_updates():
    ent = _entities()
    with torch.no_grad():
        table = ent.all_fused()
        torch.testing.assert_close(table, ent(torch.arange(N)))
        assert ent.all_fused() is table  # cached while nothing changes
        ent.structural.add_(1.0)  # an optimiser step is an in-place update
        updated = ent.all_fused()
    assert updated is not table
    torch.testing.assert_close(updated, ent(torch.arange(N)))
    assert ent.all_fused().requires_grad  # with autograd on, never the cache
    buf = io.BytesIO()
    torch.save(ent, buf)  # the cache (weak references) does not break pickling


def test_bad_feature_tables_are_reported_by_name():
    bad = {"visual": SimpleNamespace(values=torch.zeros(N + 1, 4), mask=torch.ones(N + 1, dtype=torch.bool))}
    with pytest.raises(DataError, match="'visual'.*num_entities=10"):
        MultimodalEntities(N, W, bad, init_range=0.1)
    with pytest.raises(ConfigError, match="reserved"):
        MultimodalEntities(N, W, {"structural": _features()["visual"]}, init_range=0.1)
    with pytest.raises(ConfigError, match="model.fusion"):
        MultimodalEntities(N, W, {}, fusion="concat", init_range=0.1)


# ---------------------------------------------------------------------------------------- KGEModel
def _model(scorer, **kw):
    torch.manual_seed(0)
    return KGEModel(N, 3, ModelConfig(scorer=scorer, dim=4, **kw), _features())


@pytest.mark.parametrize("scorer", ["transe", "rotate", "distmult", "complex"])
def test_kge_model_ranking_paths_equal_triple_scores(scorer):
    model = _model(scorer)
    h, r, t = torch.tensor([0, 3, 1]), torch.tensor([2, 0, 1]), torch.tensor([5, 1, 9])
    every = torch.arange(N).expand(3, N)
    tails = model.score_tails(h, r)
    heads = model.score_heads(r, t)
    assert tails.shape == heads.shape == (3, N)
    torch.testing.assert_close(tails, model.score_triples(h[:, None], r[:, None], every))
    torch.testing.assert_close(heads, model.score_triples(every, r[:, None], t[:, None]))
    # and both agree with the scorer applied to fused vectors
    want = model.scorer.score(model.entity(h), model.relation(r), model.entity(t))
    torch.testing.assert_close(model.score_triples(h, r, t), want)
    torch.testing.assert_close(tails[torch.arange(3), t], want)


def test_kge_model_widths_and_relation_init():
    rot = _model("rotate", gamma=12.0, epsilon=2.0)
    assert rot.entities.width == 8 and rot.relations.shape == (3, 4)
    assert rot.relations.abs().max() <= math.pi and rot.relations.abs().max() > 1.0  # phases in radians
    cx = _model("complex", gamma=12.0, epsilon=2.0)
    assert cx.relations.shape == (3, 8) and cx.relations.abs().max() < (12.0 + 2.0) / 4
    assert cx.entities.structural.abs().max() < (12.0 + 2.0) / 4


def test_kge_model_trains_every_part():
    model = _model("transe")
    pos = model.score_triples(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    pos.sum().backward()
    for name in (
        "entities.structural",
        "relations",
        "entities.attention",
        "entities.features.visual.proj.weight",
    ):
        assert model.get_parameter(name).grad is not None, name


def test_regularization_covers_structural_and_relation_tables():
    model = _model("distmult")
    e, r = model.entities.structural, model.relations
    torch.testing.assert_close(model.regularization("l3"), e.abs().pow(3).sum() + r.abs().pow(3).sum())
    torch.testing.assert_close(model.regularization("l2"), e.pow(2).sum() + r.pow(2).sum())
    assert model.regularization("none").item() == 0.0
    rot = _model("rotate")  # phases are not penalised
    torch.testing.assert_close(rot.regularization("l3"), rot.entities.structural.abs().pow(3).sum())
    with pytest.raises(ConfigError, match="unknown regularizer 'l1'"):
        model.regularization("l1")


def test_from_config_uses_the_dataset():
    dataset = SimpleNamespace(num_entities=N, num_relations=5, features=_features())
    cfg = RunConfig.model_validate({"model": {"scorer": "complex", "dim": 3}})
    model = KGEModel.from_config(cfg, dataset)
    assert model.num_entities == N and model.num_relations == 5
    assert model.entities.modalities == ["structural", "textual", "visual"]
    assert model.score_tails(torch.tensor([0]), torch.tensor([4])).shape == (1, N)


def test_structural_only_model():
    torch.manual_seed(0)
    model = KGEModel(N, 2, ModelConfig(scorer="distmult", dim=4))
    assert model.entities.modalities == ["structural"]
    torch.testing.assert_close(model.entity(torch.tensor([3])), model.entities.structural[[3]])
