"""The switches that reproduce the released code's training signal, each against a slow, literal
transcription of the released formula on small tensors (no copy of the authors' code is needed).

Released behaviours (docs/dhns-method.md, "released-equivalent mode"): the undetached diffusion loss
(``dhns.kgc_diffusion_weight``), one step and noise for head and tail (``dhns.noise: shared``), the summed
per-direction and per-modality L1 losses, the head "chain" that is one step on the tail chain's state
(``dhns.head_chain: tail_step``), the inverted TransE conditions (``dhns.condition: inverted``), generated
vectors scored against structural entities (``dhns.scoring: structural``), the ignored DistMult margin
(``dhns.margin.bilinear_scale: 0``) and the DDPM sinusoid.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dhns_search.config import load_config
from dhns_search.config.io import validate_config
from dhns_search.diffusion import sinusoidal_embedding
from dhns_search.models import KGEModel
from dhns_search.training.dhns import DHNS, HEAD, TAIL, scale_grad

SMALL = ["model.dim=8", "dhns.steps=10", "dhns.modalities=[structural, visual, textual]"]


def _dhns(synth_dataset, *extra, preset="dhns-distmult"):
    cfg = load_config(preset=preset, overrides=[*SMALL, *extra])
    torch.manual_seed(0)
    model = KGEModel(synth_dataset.num_entities, synth_dataset.num_relations, cfg.model, synth_dataset.features)
    return cfg, model, DHNS(model, cfg.dhns, cfg.model, cfg.loss)


def _grads(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


def test_scale_grad_is_identity_forward_and_scales_backward():
    x = torch.randn(5, requires_grad=True)
    for w in (0.0, 0.25, 1.0, 3.0):
        x.grad = None
        y = scale_grad(x, w)
        assert torch.equal(y, x)
        if w == 0:
            assert not y.requires_grad
            continue
        (y * torch.arange(5.0)).sum().backward()
        assert torch.allclose(x.grad, w * torch.arange(5.0))


def test_kgc_diffusion_weight_scales_only_the_kgc_gradient(synth_dataset):
    """0: the KGC model gets no gradient from the diffusion loss; 1: the full (released) gradient;
    0.3: 0.3 times it.  The loss and the generator's gradients do not depend on the weight."""
    triples = synth_dataset.train[:12]
    results = {}
    for w in (0.0, 0.3, 1.0):
        _, model, dhns = _dhns(synth_dataset, f"dhns.kgc_diffusion_weight={w}")
        loss = dhns.diffusion_loss(model, triples, torch.Generator().manual_seed(3))
        loss.backward()
        results[w] = (loss.item(), _grads(model.parameters()), _grads(dhns.generator.parameters()))
    assert results[0.0][0] == results[0.3][0] == results[1.0][0]
    for g0, g3, g1 in zip(results[0.0][2], results[0.3][2], results[1.0][2]):
        assert torch.equal(g0, g1) and torch.equal(g0, g3)
    assert all(g is None for g in results[0.0][1])
    full = [g for g in results[1.0][1] if g is not None]
    assert full and any(g.abs().sum() > 0 for g in full)
    for g3, g1 in zip(results[0.3][1], results[1.0][1]):
        if g1 is not None:  # fp32 sums of scaled terms: a few ulps of the tensor's largest entry, not of each
            torch.testing.assert_close(g3, 0.3 * g1, rtol=1e-5, atol=1e-6 * float(g1.abs().max()))


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_diffusion_loss_is_the_sum_of_per_direction_per_modality_means(noise, synth_dataset):
    """The released code: for each modality, L1(eps, tail prediction) + L1(eps, head prediction), each a
    mean, summed over the modalities; with shared noise one step and one eps serve head and tail."""
    _, model, dhns = _dhns(synth_dataset, "dhns.diffusion_loss=l1", f"dhns.noise={noise}")
    triples = synth_dataset.train[:6]
    x0, cond = dhns._conditions(model, triples, 0.0)  # [2, B, M, w]
    gen = dhns.generator
    steps = gen.steps
    t = torch.randint(1, steps + 1, (1 if noise == "shared" else 2, 6, 3), generator=torch.Generator().manual_seed(1))
    eps = torch.randn((t.shape[0], 6, 3, x0.shape[-1]), generator=torch.Generator().manual_seed(2))
    fast = dhns.diffusion_loss(model, triples, None, (x0, cond), draws=(t, eps))

    abar = torch.cumprod(1 - gen.schedule.betas[1:].double(), 0)  # released: cumprod(1 - linspace(...))
    ref = 0.0
    for m in range(3):
        for d in (TAIL, HEAD):
            td, ed = t[0 if noise == "shared" else d, :, m], eps[0 if noise == "shared" else d, :, m]
            a = abar[td - 1].float().unsqueeze(-1)
            x_noisy = a.sqrt() * x0[d, :, m] + (1 - a).sqrt() * ed
            temb = gen.denoiser.time_embedding(td)
            pred = gen.denoiser(x_noisy, temb, cond[d, :, m])
            ref = ref + F.l1_loss(pred, ed)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)


def test_shared_noise_draws_one_step_and_eps_for_head_and_tail(synth_dataset, monkeypatch):
    _, model, dhns = _dhns(synth_dataset, "dhns.noise=shared")
    seen = {}
    original = dhns.generator.schedule.add_noise

    def spy(x0, eps, t):
        seen["eps"], seen["t"] = eps, t
        return original(x0, eps, t)

    monkeypatch.setattr(dhns.generator.schedule, "add_noise", spy)
    dhns.diffusion_loss(model, synth_dataset.train[:5], torch.Generator().manual_seed(0))
    assert torch.equal(seen["t"][TAIL], seen["t"][HEAD]) and torch.equal(seen["eps"][TAIL], seen["eps"][HEAD])
    assert not torch.equal(seen["eps"][TAIL, :, 0], seen["eps"][TAIL, :, 1])  # modalities keep their own
    _, model, dhns = _dhns(synth_dataset)
    monkeypatch.setattr(dhns.generator.schedule, "add_noise", spy)
    dhns.diffusion_loss(model, synth_dataset.train[:5], torch.Generator().manual_seed(0))
    assert not torch.equal(seen["eps"][TAIL], seen["eps"][HEAD])


@pytest.mark.parametrize("sampler", ["ancestral", "strided"])
def test_tail_step_heads_are_one_head_conditioned_step_on_the_tail_chain(sampler, synth_dataset):
    """Released sampling: x = randn; for t = T..1: x = p(x, t, c_tail); head_t = p(x, t, c_head); the
    levels are (x_k, head_{k+1}) - the head of level k is step k+1 applied to the tail state x_k."""
    _, model, dhns = _dhns(synth_dataset, "dhns.head_chain=tail_step", f"dhns.sampler={sampler}")
    _, _, separate = _dhns(synth_dataset, f"dhns.sampler={sampler}")
    triples = synth_dataset.train[:7]
    _, cond = dhns._conditions(model, triples, 0.0)
    draws = {t: torch.randn(cond[TAIL].shape, generator=torch.Generator().manual_seed(t)) for t in range(11)}
    head_z = {k: torch.randn(cond[TAIL].shape, generator=torch.Generator().manual_seed(100 + k)) for k in range(11)}
    gen = dhns.generate(model, triples, None, cond, noise=lambda t: draws[t], head_noise=lambda k: head_z[k])
    # the tails are the tail half of the usual chain run on the tail conditions alone
    tails = separate.generator.sample(cond[TAIL], dhns.kept, sampler=sampler, sampler_steps=dhns.cfg.sampler_steps,
                                      noise=lambda t: draws[t])
    sched, net = dhns.generator.schedule, dhns.generator.denoiser
    for k, level, tail in zip(dhns.kept, gen.levels, tails):
        torch.testing.assert_close(level[TAIL], tail)
        t = k + 1
        beta, alpha, abar = sched.betas[t], 1 - sched.betas[t], sched.alphas_cumprod[t]
        eps = net(tail, net.time_embedding(torch.tensor([t]))[0], cond[HEAD])
        mu = 1 / alpha.sqrt() * (tail - beta / (1 - abar).sqrt() * eps)
        expected = mu + beta.sqrt() * head_z[k] if t > 1 else mu
        torch.testing.assert_close(level[HEAD], expected, rtol=1e-5, atol=1e-5)


def test_inverted_conditions_are_the_released_transe_signs(synth_dataset):
    _, model, dhns = _dhns(synth_dataset, "dhns.condition=inverted", preset="dhns-transe")
    triples = synth_dataset.train[:4]
    h, r, t = triples.unbind(-1)
    _, cond = dhns._conditions(model, triples, 0.0)
    vh, vt, rel = dhns._vectors(model, h), dhns._vectors(model, t), model.relation(r).unsqueeze(-2)
    torch.testing.assert_close(cond[TAIL], vh - rel)  # released: h - r for a generated tail
    torch.testing.assert_close(cond[HEAD], vt + rel)  # released: t + r for a generated head
    _, model, dhns = _dhns(synth_dataset, preset="dhns-transe")
    _, cond = dhns._conditions(model, triples, 0.0)
    torch.testing.assert_close(cond[TAIL], dhns._vectors(model, h) + model.relation(r).unsqueeze(-2))


def test_structural_scoring_scores_every_generated_modality_against_structural_entities(synth_dataset):
    """Released DistMult: score_h = mean_m <gen_h_m, r, t_structural>, score_t = mean_m <h_s, r, gen_t_m>,
    score_both = mean_m <gen_h_m, r, gen_t_m>."""
    _, model, dhns = _dhns(synth_dataset, "dhns.scoring=structural", "model.fusion=none")
    triples = synth_dataset.train[:5]
    gen = dhns.generate(model, triples, torch.Generator().manual_seed(0))
    pos, neg = dhns.level_scores(model, gen)
    h, r, t = triples.unbind(-1)
    hs, ts, rel = model.entities.structural[h], model.entities.structural[t], model.relations[r]
    for level, scores in zip(gen.levels, neg):
        gh, gt = level[HEAD], level[TAIL]  # [B, M, w]
        ref_h = sum((gh[:, m] * rel * ts).sum(-1) for m in range(3)) / 3
        ref_t = sum((hs * rel * gt[:, m]).sum(-1) for m in range(3)) / 3
        ref_b = sum((gh[:, m] * rel * gt[:, m]).sum(-1) for m in range(3)) / 3
        torch.testing.assert_close(scores, torch.stack([ref_h, ref_t, ref_b]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pos, (hs * rel * ts).sum(-1))  # the released DistMult: structural positives


def test_zero_bilinear_scale_ignores_the_distmult_margin(synth_dataset):
    """The released DistMult drops the per-level margin: with bilinear_scale 0 the factors change nothing."""
    losses = []
    for factors in ("[0.1, 0.3, 0.5, 0.7, 0.9]", "[0.9, 0.9, 0.9, 0.9, 0.9]"):
        _, model, dhns = _dhns(synth_dataset, "dhns.margin.bilinear_scale=0.0", f"dhns.margin.factors={factors}")
        gen = dhns.generate(model, synth_dataset.train[:5], torch.Generator().manual_seed(0))
        losses.append(dhns.hardness_loss(model, gen, epoch=1))
    assert torch.equal(losses[0], losses[1])


def test_sinusoid_is_the_released_and_ddpm_one():
    t, width = torch.tensor([0, 1, 7, 50]), 16
    half = width // 2
    freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))  # released SinusoidalPosEmb
    ref = torch.cat([(t[:, None] * freqs).sin(), (t[:, None] * freqs).cos()], dim=-1)
    torch.testing.assert_close(sinusoidal_embedding(t, width), ref)


def test_legacy_detach_inputs_maps_to_the_weight():
    base = load_config(preset="dhns-distmult").model_dump(mode="json")
    for legacy, weight in ((True, 0.0), (False, 1.0)):
        data = {**base, "dhns": {**base["dhns"], "detach_inputs": legacy}}
        del data["dhns"]["kgc_diffusion_weight"]
        assert validate_config(data, "old export").dhns.kgc_diffusion_weight == weight


def test_projected_missing_rows_give_the_projection_bias_and_are_fused(synth_dataset):
    """Released: an all-zero feature row goes through the projection (giving its bias) and the fusion."""
    feats = synth_dataset.features["visual"]
    missing_row = int((~feats.mask).nonzero()[0])
    _, model, _ = _dhns(synth_dataset, "model.missing=project")
    vis = model.entities.modality_index("visual")
    ids = torch.tensor([missing_row])
    proj = model.entities.features["visual"].proj
    torch.testing.assert_close(model.entities.modality_vectors(ids)[0, vis], proj(feats.values[missing_row]))
    assert model.entities.modality_mask(ids)[0].all()
    _, learned, _ = _dhns(synth_dataset)
    assert not learned.entities.modality_mask(ids)[0, vis]


def test_the_released_preset_turns_every_released_behaviour_on():
    rel = load_config(preset="released-distmult-mkgy")
    d = rel.dhns
    assert (d.kgc_diffusion_weight, d.diffusion_loss, d.noise, d.head_chain, d.scoring) == (
        1.0, "l1", "shared", "tail_step", "structural")
    assert d.margin.bilinear_scale == 0.0 and (d.sampler, d.hidden_mult, d.batch_fraction) == ("ancestral", 4, 1.0)
    assert (rel.model.missing, rel.model.feature_mode, rel.model.fusion) == ("project", "finetune", "none")
    paper = load_config(preset="paper-distmult-mkgy").dhns
    assert paper.kgc_diffusion_weight == 1.0 and paper.diffusion_loss == "l1"  # the released gradient path
    assert (paper.noise, paper.head_chain, paper.margin.bilinear_scale) == ("independent", "separate", 1.0)
