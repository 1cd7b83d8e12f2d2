"""Negative samplers: shapes, which side changes, Bernoulli probabilities, filtering, determinism."""

import pytest
import torch

from dhns_search.config import validate_config
from dhns_search.config.models import NegativeConfig
from dhns_search.errors import ConfigError
from dhns_search.training.negatives import (
    BernoulliSampler,
    UniformSampler,
    bernoulli_head_probabilities,
    make_negative_sampler,
)

N, R = 50, 3


def _train(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(N, (n,), generator=g),
            torch.randint(R, (n,), generator=g),
            torch.randint(N, (n,), generator=g),
        ],
        dim=1,
    )


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _sampler(corrupt, k=8, **kw):
    return UniformSampler(num_entities=N, num_relations=R, num_negatives=k, corrupt=corrupt, **kw)


def test_shape_and_relation_kept():
    batch = _train()[:6]
    neg = _sampler("mixed").sample(batch, 0, _gen())
    assert neg.shape == (6, 8, 3) and neg.dtype == torch.long
    assert (neg[..., 1] == batch[:, None, 1]).all()
    assert neg.min() >= 0 and neg[..., [0, 2]].max() < N


@pytest.mark.parametrize("corrupt,changed,kept", [("head", 0, 2), ("tail", 2, 0)])
def test_only_the_chosen_side_changes(corrupt, changed, kept):
    batch = _train()[:20]
    neg = _sampler(corrupt, k=16).sample(batch, 0, _gen())
    assert (neg[..., kept] == batch[:, None, kept]).all()
    assert (neg[..., changed] != batch[:, None, changed]).float().mean() > 0.8  # really replaced


def test_alternate_even_batches_corrupt_tails_odd_batches_heads():
    batch = _train()[:20]
    sampler = _sampler("alternate", k=16)
    for index, kept in [(0, 0), (1, 2), (2, 0), (7, 2)]:
        neg = sampler.sample(batch, index, _gen(index))
        assert (neg[..., kept] == batch[:, None, kept]).all(), index
        assert (neg[..., 2 - kept] != batch[:, None, 2 - kept]).any(), index


def test_mixed_changes_exactly_one_side_per_negative_and_both_sides_occur():
    batch = _train()[:30]
    neg = _sampler("mixed", k=32).sample(batch, 0, _gen())
    head_same = neg[..., 0] == batch[:, None, 0]
    tail_same = neg[..., 2] == batch[:, None, 2]
    assert (head_same | tail_same).all()  # never both replaced
    head_changed = (~head_same).float().mean().item()
    assert 0.4 < head_changed < 0.6  # probability 0.5 (minus draws of the same entity)


def _hand_graph():
    # r0 is 1-to-N (head 0 -> tails 1, 2, 3), r1 is N-to-1 (heads 1, 2, 3 -> tail 0),
    # r2 has no triples, r3 is 1-to-1 (4 -> 5, 6 -> 7)
    return torch.tensor(
        [[0, 0, 1], [0, 0, 2], [0, 0, 3], [1, 1, 0], [2, 1, 0], [3, 1, 0], [4, 3, 5], [6, 3, 7]]
    )


def test_bernoulli_probabilities_on_a_hand_made_graph():
    probs = bernoulli_head_probabilities(_hand_graph(), 8, 4)
    # r0: tph = 3/1, hpt = 3/3 -> 3/4; r1: tph = 1, hpt = 3 -> 1/4; r2: none -> 1/2; r3: 1/(1+1)
    torch.testing.assert_close(probs, torch.tensor([0.75, 0.25, 0.5, 0.5]))


def test_bernoulli_sampler_corrupts_heads_with_those_probabilities():
    train = _hand_graph()
    sampler = BernoulliSampler(
        num_entities=1000, num_relations=4, num_negatives=4000, corrupt="mixed", train=train
    )
    neg = sampler.sample(train[[0, 3]], 0, _gen())
    head_rate = (neg[..., 0] != train[[0, 3], None, 0]).float().mean(dim=1)
    torch.testing.assert_close(head_rate, torch.tensor([0.75, 0.25]), atol=0.03, rtol=0)


def test_bernoulli_needs_mixed_mode():
    # rejected when the configuration is validated, with its key path ...
    with pytest.raises(ConfigError, match=r"negatives: .*needs corrupt 'mixed'"):
        validate_config({"negatives": {"sampler": "bernoulli", "corrupt": "alternate"}})
    # ... and by the factory for a config built without validation
    cfg = NegativeConfig.model_construct(sampler="bernoulli", corrupt="alternate", num=4, filtered=False)
    with pytest.raises(ConfigError, match="needs negatives.corrupt 'mixed', got 'alternate'"):
        make_negative_sampler(cfg, _hand_graph(), 8, 4)


def _dense_graph():
    """6 entities; r0 links every ordered pair of distinct entities, r1 a few pairs."""
    pairs = [(h, 0, t) for h in range(6) for t in range(6) if h != t]
    return torch.tensor(pairs + [(0, 1, 1), (1, 1, 2), (2, 1, 0)])


def test_filtered_never_returns_a_training_triple():
    train = _dense_graph()
    known = {tuple(x) for x in train.tolist()}
    for corrupt in ("mixed", "head", "tail"):
        sampler = UniformSampler(
            num_entities=6,
            num_relations=2,
            num_negatives=20,
            corrupt=corrupt,
            filtered=True,
            train=train,
            max_rounds=2,
        )
        neg = sampler.sample(train, 0, _gen())
        found = {tuple(x) for x in neg.reshape(-1, 3).tolist()}
        assert not found & known, corrupt
        # for r0 the only non-training corruption of (h, 0, t) is a self loop
        r0 = neg[train[:, 1] == 0].reshape(-1, 3)
        assert (r0[:, 0] == r0[:, 2]).all(), corrupt
    # the same sampler unfiltered does return training triples: the check above is not vacuous
    plain = UniformSampler(num_entities=6, num_relations=2, num_negatives=20, corrupt="mixed")
    assert {tuple(x) for x in plain.sample(train, 0, _gen()).reshape(-1, 3).tolist()} & known


def test_filter_lookup_and_a_side_with_no_valid_entity():
    train = _dense_graph()
    sampler = UniformSampler(
        num_entities=6,
        num_relations=2,
        num_negatives=3,
        corrupt="tail",
        filtered=True,
        train=torch.cat([train, torch.tensor([[h, 0, h] for h in range(6)])]),
    )
    triples = torch.tensor([[0, 0, 1], [0, 1, 1], [0, 1, 2], [5, 0, 5]])
    assert sampler.is_training_triple(triples).tolist() == [True, True, False, True]
    # every tail of (h, 0, .) is now a training triple: nothing valid exists, the sampler still answers
    neg = sampler.sample(torch.tensor([[0, 0, 1]]), 0, _gen())
    assert neg.shape == (1, 3, 3) and (neg[..., :2] == torch.tensor([0, 0])).all()


def test_same_generator_state_gives_the_same_negatives():
    batch = _train()[:10]
    sampler = make_negative_sampler(NegativeConfig(corrupt="mixed", num=5, filtered=True), _train(), N, R)
    a = sampler.sample(batch, 3, _gen(7))
    b = sampler.sample(batch, 3, _gen(7))
    c = sampler.sample(batch, 3, _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_factory_builds_what_the_config_says():
    s = make_negative_sampler(NegativeConfig(num=4, corrupt="head"), _train(), N, R)
    assert isinstance(s, UniformSampler) and s.num_negatives == 4 and s.corrupt == "head" and not s.filtered
    b = make_negative_sampler(NegativeConfig(sampler="bernoulli", corrupt="mixed"), _train(), N, R)
    assert isinstance(b, BernoulliSampler) and b.head_probabilities.shape == (R,)
    with pytest.raises(ConfigError, match="unknown mode 'both'"):
        UniformSampler(num_entities=N, num_relations=R, num_negatives=2, corrupt="both")


def test_filter_keys_are_the_keys_of_the_assembled_triples():
    """The filter looks negatives up by key without assembling them: the same keys as triple_keys."""
    from dhns_search.training.negatives import triple_keys

    s = _sampler("mixed", k=16, filtered=True, train=_train())
    batch = _train(30, seed=1)
    g = _gen(2)
    heads = s._corrupt_heads(batch, 0, g)
    ents = s.draw_entities(batch, heads, g)
    want = triple_keys(s._assemble(batch, heads, ents), N, R)
    assert torch.equal(s._corrupted_keys(batch, heads, ents), want)
