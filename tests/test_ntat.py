"""NTAT: margin factor schedules, the margin scale per scorer, and the hardness-adaptive loss."""

import math

import pytest
import torch

from dhns_search.config.models import MarginConfig, ModelConfig
from dhns_search.errors import ConfigError
from dhns_search.models import make_scorer
from dhns_search.training.ntat import margin_factors, margin_scale, ntat_loss


def _logsig(x):
    return -math.log1p(math.exp(-x))


def test_fixed_linear_geometric_factors():
    assert margin_factors(MarginConfig(), 5, 0) == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert margin_factors(MarginConfig(schedule="linear", start=0.2, end=1.0), 5, 3) == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0]
    )
    assert margin_factors(MarginConfig(schedule="geometric", start=0.1, end=0.9), 3, 0) == pytest.approx(
        [0.1, 0.3, 0.9]
    )
    assert margin_factors(MarginConfig(schedule="linear"), 1, 0) == [0.1]
    with pytest.raises(ConfigError, match="factors has 5 entries but there are 3"):
        margin_factors(MarginConfig(), 3, 0)


def test_curriculum_endpoints_and_midpoint():
    cfg = MarginConfig(factors=[0.1, 0.5], curriculum_epochs=10)
    assert margin_factors(cfg, 2, 0) == [1.0, 1.0]
    assert margin_factors(cfg, 2, 5) == pytest.approx([0.55, 0.75])
    assert margin_factors(cfg, 2, 10) == pytest.approx([0.1, 0.5])
    assert margin_factors(cfg, 2, 50) == pytest.approx([0.1, 0.5])


def test_margin_scale_per_scorer():
    model_cfg, margin_cfg = ModelConfig(gamma=9.0), MarginConfig(bilinear_scale=2.5)
    assert margin_scale("transe", model_cfg, margin_cfg) == 9.0
    assert margin_scale(make_scorer("rotate", gamma=9.0), model_cfg, margin_cfg) == 9.0
    assert margin_scale("distmult", model_cfg, margin_cfg) == 2.5
    assert margin_scale(make_scorer("complex", gamma=9.0), model_cfg, margin_cfg) == 2.5


def test_hand_computed_value():
    pos = torch.tensor([1.0, 2.0])
    neg = torch.tensor(
        [  # level 0 (weight 1, factor .5), level 1 (weight 2, factor 1)
            [[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]],
            [[1.0, 1.0], [0.0, 0.0], [-2.0, 3.0]],
        ]
    )
    scale = 4.0  # level 0 scores shift by (0.5 - 1) * 4 = -2
    pos_term = (_logsig(1.0) + _logsig(2.0)) / 2
    total = 0.0
    for weight, factor, level in [(1.0, 0.5, neg[0]), (2.0, 1.0, neg[1])]:
        for side in level.tolist():
            shifted = [n + (factor - 1) * scale for n in side]
            total += weight * -0.5 * (pos_term + sum(_logsig(-n) for n in shifted) / 2)
    want = total / (3 * 2)
    got = ntat_loss(pos, neg, [1.0, 2.0], [0.5, 1.0], scale, 0.5)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_distance_shift_equals_the_released_margin_score():
    # the released score of a generated negative is f * gamma - d; ours is (gamma - d) + (f - 1) * gamma
    gamma, f = 6.0, 0.3
    scorer = make_scorer("transe", gamma=gamma)
    g = torch.Generator().manual_seed(0)
    h, r, t, t_gen = (torch.randn(4, 5, generator=g) for _ in range(4))
    pos = scorer.score(h, r, t)
    d = (h + r - t_gen).abs().sum(-1)
    released = f * gamma - d
    want = -0.5 * (
        torch.nn.functional.logsigmoid(pos).mean() + torch.nn.functional.logsigmoid(-released).mean()
    )
    neg = scorer.score(h, r, t_gen).expand(1, 3, 4)
    torch.testing.assert_close(ntat_loss(pos, neg, [1.0], [f], gamma), want)


def test_zero_weight_levels_do_not_contribute():
    g = torch.Generator().manual_seed(1)
    pos, neg = torch.randn(5, generator=g), torch.randn(3, 3, 5, generator=g)
    base = ntat_loss(pos, neg, [0.0, 1.0, 0.5], [0.1, 0.5, 0.9], 2.0)
    poisoned = neg.clone()
    poisoned[0] = float("nan")  # the dropped level is not even evaluated
    torch.testing.assert_close(ntat_loss(pos, poisoned, [0.0, 1.0, 0.5], [0.1, 0.5, 0.9], 2.0), base)
    dropped = ntat_loss(pos, neg[1:], [1.0, 0.5], [0.5, 0.9], 2.0)
    torch.testing.assert_close(dropped, base)  # same normalisation: 3 * (number of nonzero weights)
    with pytest.raises(ValueError, match="all level weights are zero"):
        ntat_loss(pos, neg, [0.0, 0.0, 0.0], [0.1, 0.5, 0.9], 2.0)


@pytest.mark.parametrize("name", ["transe", "rotate", "distmult", "complex"])
def test_margin_factors_change_the_loss_for_every_scorer(name):
    scorer = make_scorer(name, gamma=6.0)
    scale = margin_scale(scorer, ModelConfig(scorer=name, gamma=6.0), MarginConfig())
    g = torch.Generator().manual_seed(2)
    we, wr = scorer.entity_width(4), scorer.relation_width(4)
    h, t = torch.randn(6, we, generator=g), torch.randn(6, we, generator=g)
    r = torch.randn(6, wr, generator=g)
    gen = torch.randn(2, 6, we, generator=g)  # generated entities at 2 levels
    pos = scorer.score(h, r, t)
    neg = torch.stack(
        [
            torch.stack([scorer.score(lvl, r, t), scorer.score(h, r, lvl), scorer.score(lvl, r, lvl)])
            for lvl in gen
        ]
    )
    assert neg.shape == (2, 3, 6)
    a = ntat_loss(pos, neg, [1.0, 1.0], [0.1, 0.9], scale)
    b = ntat_loss(pos, neg, [1.0, 1.0], [0.5, 0.5], scale)
    c = ntat_loss(pos, neg, [1.0, 1.0], [1.0, 1.0], scale)
    assert not torch.isclose(a, b) and not torch.isclose(b, c)
    assert c > b  # a smaller factor shifts negatives down: less loss


def test_k_negatives_per_positive_use_self_adversarial_weights():
    g = torch.Generator().manual_seed(3)
    pos, neg = torch.randn(4, generator=g), torch.randn(2, 3, 4, generator=g)
    single = ntat_loss(pos, neg, [1.0, 0.5], [0.3, 0.7], 1.5, 2.0)
    torch.testing.assert_close(ntat_loss(pos, neg.unsqueeze(-1), [1.0, 0.5], [0.3, 0.7], 1.5, 2.0), single)
    many = torch.randn(2, 3, 4, 5, generator=g)
    uniform = ntat_loss(pos, many, [1.0, 0.5], [0.3, 0.7], 1.5, 0.0)
    # temperature 0: the K negatives are averaged, i.e. the same as treating each one as its own column
    flat = ntat_loss(pos.repeat_interleave(5), many.reshape(2, 3, 20), [1.0, 0.5], [0.3, 0.7], 1.5)
    torch.testing.assert_close(uniform, flat)
    assert not torch.isclose(ntat_loss(pos, many, [1.0, 0.5], [0.3, 0.7], 1.5, 3.0), uniform)


def test_gradients_reach_positive_and_negative_scores():
    pos = torch.tensor([0.5, -0.5], requires_grad=True)
    neg = torch.zeros(2, 3, 2, requires_grad=True)
    ntat_loss(pos, neg, torch.tensor([0.0, 1.0]), torch.tensor([0.1, 0.9]), 1.0).backward()
    assert (pos.grad < 0).all()  # raising a positive's score lowers the loss
    assert (neg.grad[1] > 0).all() and (neg.grad[0] == 0).all()
