"""Candidate scoring of base negatives (``KGEModel.score_batch``) against the plain path (``score_triples``).

For every scorer, fusion and corruption mode the fast path must give the plain path's scores and the same
gradients for every parameter.  In float64 both agree to 1e-10 (the algorithm is the same function); in
float32 the sums run in another order (sampled matrix products, head queries composed from the tail), so
they agree to float rounding: ``allclose(rtol=1e-5, atol=1e-6 * scale)``.  Training curves on the
embedded graph agree within the same kind of tolerance, and each path repeats itself bit for bit.
"""

import pytest
import torch

from dhns_search.config import load_config
from dhns_search.config.models import ModelConfig
from dhns_search.models import SCORERS, KGEModel
from dhns_search.models.candidates import sampled_dot, unique_ids
from dhns_search.training.loop import train

ALL = sorted(SCORERS)
N, R, B, K = 40, 5, 12, 7


class _Table:
    def __init__(self, values, mask):
        self.values, self.mask = values, mask


def _model(scorer: str, fusion: str, dtype=torch.float64) -> KGEModel:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    feats = {"visual": _Table(torch.randn(N, 6, generator=g), torch.rand(N, generator=g) > 0.2)}
    cfg = ModelConfig(scorer=scorer, dim=8, gamma=3.0, fusion=fusion)
    return KGEModel(N, R, cfg, feats).to(dtype)


def _batch(mode: str, *, seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.randint(n, (B,), generator=g), torch.randint(R, (B,), generator=g),
                       torch.randint(n, (B,), generator=g)], dim=1)
    ents = torch.randint(n, (B, K), generator=g)
    heads = {"tail": torch.zeros(B, K, dtype=torch.bool), "head": torch.ones(B, K, dtype=torch.bool),
             "mixed": torch.rand(B, K, generator=g) < 0.5}[mode]
    neg = pos.unsqueeze(1).expand(-1, K, -1).clone()
    neg[..., 0] = torch.where(heads, ents, neg[..., 0])
    neg[..., 2] = torch.where(heads, neg[..., 2], ents)
    neg[0, 0] = pos[0]  # a negative equal to its positive (an unfiltered uniform draw can give one)
    return pos, neg


def _scores_and_grads(model, pos, neg, *, fast: bool):
    model.zero_grad(set_to_none=True)
    model.candidate_scoring = fast
    p, n = model.score_batch(pos, neg)
    w = torch.linspace(-1, 1, n.numel(), dtype=n.dtype).view_as(n)
    (p.sum() * 0.5 + (n * w).sum()).backward()
    grads = {k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None}
    return p.detach(), n.detach(), grads


@pytest.mark.parametrize("mode", ["tail", "head", "mixed"])
@pytest.mark.parametrize("fusion", ["none", "attention"])
@pytest.mark.parametrize("scorer", ALL)
def test_fast_path_equals_plain_path_scores_and_gradients(scorer, fusion, mode):
    model = _model(scorer, fusion)
    pos, neg = _batch(mode)
    fast = _scores_and_grads(model, pos, neg, fast=True)
    plain = _scores_and_grads(model, pos, neg, fast=False)
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast[1], plain[1], rtol=1e-10, atol=1e-10)
    assert fast[2].keys() == plain[2].keys() and "entities.structural" in fast[2]
    for name in plain[2]:
        torch.testing.assert_close(fast[2][name], plain[2][name], rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("scorer", ALL)
def test_float32_agrees_to_rounding(scorer):
    model = _model(scorer, "attention", torch.float32)
    pos, neg = _batch("mixed")
    fast, plain = (_scores_and_grads(model, pos, neg, fast=f) for f in (True, False))
    scale = plain[1].abs().max()
    torch.testing.assert_close(fast[1], plain[1], rtol=1e-5, atol=1e-6 * scale)
    for name, g in plain[2].items():
        torch.testing.assert_close(fast[2][name], g, rtol=1e-5, atol=1e-6 * g.abs().max(), msg=name)


def test_few_distinct_entities_embed_only_those():
    """With most entities absent the batch's distinct entities are embedded (the other branch)."""
    model = _model("distmult", "attention")
    pos, neg = _batch("mixed", n=8)  # ids below 8 of 40 entities
    fast, plain = (_scores_and_grads(model, pos, neg, fast=f) for f in (True, False))
    torch.testing.assert_close(fast[1], plain[1], rtol=1e-10, atol=1e-10)
    for name, g in plain[2].items():
        torch.testing.assert_close(fast[2][name], g, rtol=1e-10, atol=1e-10, msg=name)


def test_distmult_against_an_obviously_correct_loop():
    model = _model("distmult", "none")
    pos, neg = _batch("mixed")
    _, got = model.score_batch(pos, neg)
    e, rel = model.entities.structural.detach(), model.relations.detach()
    for b in range(B):
        for k in range(K):
            h, r, t = neg[b, k].tolist()
            want = sum(e[h, i] * rel[r, i] * e[t, i] for i in range(e.shape[1]))
            assert abs(got[b, k].item() - want.item()) < 1e-12


def test_negatives_that_keep_no_side_fall_back_to_triple_scoring():
    model = _model("complex", "attention")
    pos, neg = _batch("tail")
    neg[3, 2] = torch.tensor([(pos[3, 0] + 1) % N, pos[3, 1], (pos[3, 2] + 1) % N])  # both sides changed
    neg[4, 1, 1] = (pos[4, 1] + 1) % R  # relation changed
    _, got = model.score_batch(pos, neg)
    torch.testing.assert_close(got, model.score_triples(*neg.unbind(-1)), rtol=0, atol=0)


def test_sampled_dot_matches_gathered_products_with_repeats_and_any_query_order():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(6, 5, generator=g, dtype=torch.float64)
    table = torch.randn(9, 5, generator=g, dtype=torch.float64)
    cand = torch.randint(9, (3, 8), generator=g)
    cand[0, :3] = 4  # repeated candidates in one row
    query = torch.randint(6, (3, 8), generator=g)
    for qq, qi in ((q[:3], None), (q, query)):
        a, t = qq.clone().requires_grad_(), table.clone().requires_grad_()
        got = sampled_dot(a, t, cand, qi)
        a2, t2 = qq.clone().requires_grad_(), table.clone().requires_grad_()
        rows = a2.unsqueeze(1).expand(-1, 8, -1) if qi is None else a2[qi]
        want = (rows * t2[cand]).sum(-1)
        torch.testing.assert_close(got, want)
        w = torch.randn(3, 8, generator=g, dtype=torch.float64)
        (got * w).sum().backward()
        (want * w).sum().backward()
        torch.testing.assert_close(a.grad, a2.grad)
        torch.testing.assert_close(t.grad, t2.grad)


def test_sampled_dot_with_more_pairs_in_a_row_than_table_rows():
    """More negatives than entities (a tiny graph): PyTorch's CSR kernels refuse the pattern; the result is
    still the gathered products (it was a RuntimeError from torch.copy_ in the first training step)."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, 4, generator=g, dtype=torch.float64)
    table = torch.randn(2, 4, generator=g, dtype=torch.float64)
    cand = torch.randint(2, (3, 5), generator=g)
    torch.testing.assert_close(sampled_dot(q, table, cand), (q.unsqueeze(1) * table[cand]).sum(-1))
    query = torch.zeros(3, 5, dtype=torch.long)  # every pair on one query row
    torch.testing.assert_close(sampled_dot(q, table, cand, query), (q[query] * table[cand]).sum(-1))


def test_unique_ids_is_torch_unique():
    ids = torch.tensor([5, 1, 5, 9, 0, 1, 1])
    distinct, inverse = unique_ids(ids, 12)
    want, want_inv = torch.unique(ids, return_inverse=True)
    assert torch.equal(distinct, want) and torch.equal(inverse, want_inv)


def _curve(fast: bool, preset: str):
    KGEModel.candidate_scoring = fast
    try:
        cfg = load_config(preset=preset, overrides=[
            "model.dim=32", "negatives.num=16", "train.epochs=4", "train.eval_every=2",
            "train.batch_size=2048", "train.lr=0.02", "train.progress=false"])
        return train(cfg, dataset=_curve.dataset)
    finally:
        KGEModel.candidate_scoring = True


@pytest.mark.parametrize("preset", ["uniform-distmult", "uniform-rotate"])
def test_training_curves_unchanged_within_float_tolerance(preset, synth_dataset):
    _curve.dataset = synth_dataset
    fast, again, plain = _curve(True, preset), _curve(True, preset), _curve(False, preset)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(fast.history) == strip(again.history)  # bit for bit with a seed
    assert len(fast.history) == len(plain.history) == 2
    for a, b in zip(strip(fast.history), strip(plain.history)):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), (key, a[key], b[key])


def test_l3_penalty_has_autograds_value_and_gradient():
    model = _model("complex", "none")
    tables = (model.entities.structural, model.relations)
    got = model.regularization("l3")
    got.backward()
    fast_grads = [t.grad.clone() for t in tables]
    model.zero_grad(set_to_none=True)
    want = sum(t.abs().pow(3).sum() for t in tables)
    want.backward()
    assert got.item() == want.item()
    for g, t in zip(fast_grads, tables):
        torch.testing.assert_close(g, t.grad, rtol=1e-12, atol=0)
    from dhns_search.models.kge import _AbsCubeSum

    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_AbsCubeSum.apply, (x,))


@pytest.mark.parametrize("kgc_weight", ["0.0", "1.0"])
def test_dhns_curves_with_the_diffusion_loss_fast_path_within_float_tolerance(kgc_weight, synth_dataset, monkeypatch):
    """Denoiser.forward_steps (the diffusion loss's reordered arithmetic) trains like the plain network:
    the same curves to float tolerance, detached and through the KGC model; bit for bit with itself."""
    from dhns_search.diffusion import Denoiser

    def curve():
        cfg = load_config(preset="dhns-distmult", overrides=[
            "model.dim=16", "negatives.num=8", "train.epochs=2", "train.eval_every=1", "train.batch_size=512",
            "train.progress=false", f"dhns.kgc_diffusion_weight={kgc_weight}"])
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in train(cfg, dataset=synth_dataset).history]

    fast, again = curve(), curve()
    assert fast == again
    monkeypatch.setattr(Denoiser, "forward_steps",
                        lambda self, x, t, cond, table: self.forward(x, table[t.expand(x.shape[:-1])], cond))
    plain = curve()
    assert len(fast) == len(plain) == 2
    for a, b in zip(fast, plain):
        assert a.keys() == b.keys() and a["diffusion_loss"] > 0
        for key in ("train_loss", "kgc_loss", "diffusion_loss", "ha_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (key, a[key], b[key])
        mrr = "mrr_realistic_filtered"  # a ranking: near-tied scores may swap, so a looser bound
        assert a["valid"][mrr] == pytest.approx(b["valid"][mrr], abs=2e-3), (a["valid"][mrr], b["valid"][mrr])
