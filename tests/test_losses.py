"""KGC losses against values computed by hand on tiny tensors."""

import math
from types import SimpleNamespace

import pytest
import torch

from dhns_search.config.models import LossConfig, ModelConfig
from dhns_search.models import KGEModel
from dhns_search.training.losses import kgc_loss, regularization_loss

POS = torch.tensor([1.0, -2.0])
NEG = torch.tensor([[0.5, -1.0], [2.0, 0.0]])


def _logsig(x):
    return -math.log1p(math.exp(-x))


def test_self_adversarial_value():
    alpha = 1.0
    neg_terms = []
    for row in NEG.tolist():
        z = [math.exp(alpha * n) for n in row]
        weights = [v / sum(z) for v in z]
        neg_terms.append(sum(w * _logsig(-n) for w, n in zip(weights, row)))
    want = -0.5 * ((_logsig(1.0) + _logsig(-2.0)) / 2 + sum(neg_terms) / 2)
    got = kgc_loss(POS, NEG, LossConfig(kind="self_adversarial", adv_temperature=alpha))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_self_adversarial_with_zero_temperature_is_the_uniform_mean():
    want = -0.5 * ((_logsig(1.0) + _logsig(-2.0)) / 2 + sum(_logsig(-n) for n in NEG.flatten().tolist()) / 4)
    got = kgc_loss(POS, NEG, LossConfig(kind="self_adversarial", adv_temperature=0.0))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_self_adversarial_weights_are_detached():
    neg = NEG.clone().requires_grad_(True)
    kgc_loss(POS, neg, LossConfig(kind="self_adversarial", adv_temperature=1.0)).backward()
    weights = torch.softmax(NEG, dim=-1)
    # d/dn of -1/2 mean_b sum_j w_j log sigmoid(-n_j) with w held fixed is 1/2 * 1/B * w_j * sigmoid(n_j)
    torch.testing.assert_close(neg.grad, 0.5 / 2 * weights * torch.sigmoid(NEG))


def test_margin_ranking_value():
    # relu(1 - 1 + .5) = .5, relu(1 - 1 - 1) = 0, relu(1 + 2 + 2) = 5, relu(1 + 2 + 0) = 3
    got = kgc_loss(POS, NEG, LossConfig(kind="margin_ranking", margin=1.0))
    assert got.item() == pytest.approx((0.5 + 0.0 + 5.0 + 3.0) / 4)


def test_softplus_value():
    sp = lambda x: math.log1p(math.exp(x))
    want = (sp(-1.0) + sp(2.0)) / 2 + sum(sp(n) for n in NEG.flatten().tolist()) / 4
    assert kgc_loss(POS, NEG, LossConfig(kind="softplus")).item() == pytest.approx(want, rel=1e-6)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"pos \[B\] and neg \[B, K\]"):
        kgc_loss(POS, NEG[:1], LossConfig())


def test_regularization_loss_is_the_unweighted_model_penalty():
    torch.manual_seed(0)
    features = {"visual": SimpleNamespace(values=torch.randn(5, 2), mask=torch.ones(5, dtype=torch.bool))}
    model = KGEModel(5, 2, ModelConfig(scorer="distmult", dim=3), features)
    cfg = LossConfig(regularizer="l3", reg_weight=0.5)
    got = regularization_loss(model, cfg)
    want = model.entities.structural.abs().pow(3).sum() + model.relations.abs().pow(3).sum()
    torch.testing.assert_close(got, want)  # the loop multiplies by reg_weight once
    assert regularization_loss(model, LossConfig(regularizer="none")).item() == 0.0
