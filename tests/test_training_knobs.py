"""The training knobs of a strong baseline: 1vsAll with cross-entropy, learning-rate schedules, sum fusion.

Each is checked against a slow, obviously correct reference (per-row loops, the closed-form schedule),
and each is shown to change training (a knob that did nothing would pass a test that only runs it).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from dhns_search.config import load_config
from dhns_search.config.models import LossConfig, RunConfig, TrainConfig
from dhns_search.errors import ConfigError
from dhns_search.models import KGEModel
from dhns_search.models.entities import MultimodalEntities
from dhns_search.training.kgc import KGCTerm
from dhns_search.training.loop import make_lr_scheduler, train
from dhns_search.training.losses import cross_entropy_all, kgc_loss
from dhns_search.training.terms import BatchPosition

FAST = ["model.dim=16", "train.epochs=4", "train.eval_every=1", "train.batch_size=1500", "train.lr=0.02",
        "train.progress=false", "dhns.enabled=false"]
ONE_VS_ALL = ["negatives.sampler=all", "negatives.corrupt=both", "loss.kind=cross_entropy"]


# ------------------------------------------------------------------ cross-entropy losses
def test_sampled_cross_entropy_is_the_softmax_loss_of_the_positive():
    pos = torch.tensor([1.0, -2.0])
    neg = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    want = 0.0
    for p, row in zip(pos.tolist(), neg.tolist()):
        z = [p, *row]
        want += -(p - math.log(sum(math.exp(v) for v in z)))
    got = kgc_loss(pos, neg, LossConfig(kind="cross_entropy"))
    assert got.item() == pytest.approx(want / 2, rel=1e-6)


def test_label_smoothing_spreads_the_target():
    scores = torch.tensor([[2.0, 0.0, -1.0]])
    eps = 0.3
    logp = [v - math.log(sum(math.exp(u) for u in scores[0].tolist())) for v in scores[0].tolist()]
    # target mass: 1 - eps on the true entity, eps / N on every entity
    want = -sum(((1 - eps) * (i == 1) + eps / 3) * lp for i, lp in enumerate(logp))
    got = cross_entropy_all(scores, torch.tensor([1]), label_smoothing=eps)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_one_vs_all_term_equals_a_loop_over_queries(synth_dataset):
    cfg = load_config(preset="uniform-distmult", overrides=[*FAST, *ONE_VS_ALL, "loss.reg_weight=0.0"])
    model = KGEModel.from_config(cfg, synth_dataset)
    term = KGCTerm(cfg, synth_dataset, torch.Generator().manual_seed(0))
    batch = synth_dataset.train[:7]
    loss, _ = term(model, batch, BatchPosition(1, 0, 0))
    n = synth_dataset.num_entities
    every = torch.arange(n)
    want = 0.0
    for h, r, t in batch.tolist():  # each query against every entity, by triple ids
        tails = model.score_triples(torch.full((n,), h), torch.full((n,), r), every)
        heads = model.score_triples(every, torch.full((n,), r), torch.full((n,), t))
        want += -(F.log_softmax(tails, 0)[t] + F.log_softmax(heads, 0)[h]) / 2
    torch.testing.assert_close(loss, want / len(batch), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("corrupt,side_of_batch", [("tail", ["tail", "tail"]), ("head", ["head", "head"]),
                                                   ("alternate", ["tail", "head"])])
def test_one_vs_all_sides(corrupt, side_of_batch, synth_dataset):
    cfg = load_config(preset="uniform-distmult",
                      overrides=[*FAST, *ONE_VS_ALL, f"negatives.corrupt={corrupt}", "loss.reg_weight=0.0"])
    model = KGEModel.from_config(cfg, synth_dataset)
    term = KGCTerm(cfg, synth_dataset, torch.Generator().manual_seed(0))
    batch = synth_dataset.train[:5]
    h, r, t = batch.unbind(-1)
    expected = {"tail": F.cross_entropy(model.score_tails(h, r), t),
                "head": F.cross_entropy(model.score_heads(r, t), h)}
    for k, side in enumerate(side_of_batch):
        loss, _ = term(model, batch, BatchPosition(1, k, k))
        torch.testing.assert_close(loss, expected[side])


@pytest.mark.parametrize("overrides,message", [
    (["negatives.sampler=all"], "cross_entropy"),
    (["negatives.corrupt=both"], "needs sampler 'all'"),
    ([*ONE_VS_ALL[:1], "negatives.corrupt=mixed", "loss.kind=cross_entropy"], "corrupt 'both'"),
    ([*ONE_VS_ALL, "model.scorer=rotate"], "rotate"),
])
def test_inconsistent_one_vs_all_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(preset="uniform-distmult", overrides=overrides)


@pytest.mark.parametrize("scorer", ["distmult", "complex", "transe"])
def test_one_vs_all_trains_and_is_repeatable(scorer, synth_dataset):
    cfg = load_config(preset=f"uniform-{scorer}", overrides=[*FAST, *ONE_VS_ALL])
    first = train(cfg, dataset=synth_dataset)
    again = train(cfg, dataset=synth_dataset)
    assert [r["valid"] for r in first.history] == [r["valid"] for r in again.history]
    sampled = train(load_config(preset=f"uniform-{scorer}", overrides=FAST), dataset=synth_dataset)
    assert first.history[-1]["kgc_loss"] != sampled.history[-1]["kgc_loss"]
    assert first.best_value > 0.05  # learns: chance is about 1 / num_entities


def test_dhns_runs_on_top_of_one_vs_all(synth_dataset):
    cfg = load_config(preset="dhns-distmult", overrides=[*FAST[:-1], *ONE_VS_ALL, "dhns.steps=10"])
    result = train(cfg, dataset=synth_dataset)
    assert result.history[-1]["ha_loss"] > 0 and result.history[-1]["kgc_loss"] > 0


# ------------------------------------------------------------------ learning-rate schedules
def _lrs(cfg: TrainConfig, values: list[float]) -> list[float]:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_lr_scheduler(opt, cfg)
    out = []
    for v in values:  # one epoch per value, each evaluated
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if cfg.lr_schedule == "cosine":
            sched.step()
        elif cfg.lr_schedule == "plateau":
            sched.step(v)
    return out


def test_cosine_schedule_follows_the_closed_form():
    cfg = TrainConfig(lr=0.1, epochs=5, lr_schedule="cosine", lr_min_factor=0.1)
    low = 0.01
    want = [low + (0.1 - low) * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert _lrs(cfg, [0.0] * 5) == pytest.approx(want, rel=1e-9)


def test_cosine_horizon_keeps_the_rates_of_a_longer_run():
    long = _lrs(TrainConfig(lr=0.1, epochs=8, lr_schedule="cosine"), [0.0] * 8)
    short = _lrs(TrainConfig(lr=0.1, epochs=3, lr_schedule="cosine", lr_horizon=8), [0.0] * 3)
    assert short == long[:3] and short != _lrs(TrainConfig(lr=0.1, epochs=3, lr_schedule="cosine"), [0.0] * 3)


def test_an_export_of_a_cosine_trial_replays_its_first_epochs(synth_dataset):
    """A trial annealed over 4 epochs and exported at its best epoch (2): the export keeps the horizon, so
    its two epochs are the trial's two epochs bit for bit."""
    import optuna

    from dhns_search.search.export import trial_config

    cfg = load_config(preset="uniform-distmult", overrides=[*FAST, "train.lr_schedule=cosine"])
    full = train(cfg, dataset=synth_dataset)
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={
        "best_epoch": 2, "seed": cfg.seed, "config": cfg.model_dump(mode="json")}))
    exported = trial_config(study, study.trials[0])
    assert exported.train.epochs == 2 and exported.train.lr_horizon == 4
    replay = train(exported, dataset=synth_dataset)
    assert [h["lr"] for h in replay.history] == [h["lr"] for h in full.history[:2]]
    assert [h["kgc_loss"] for h in replay.history] == [h["kgc_loss"] for h in full.history[:2]]


def test_plateau_schedule_decays_after_patience_evaluations_without_improvement():
    cfg = TrainConfig(lr=0.1, lr_schedule="plateau", lr_decay=0.5, lr_patience=1)
    got = _lrs(cfg, [0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3, 0.3])
    # improvement resets; the 2nd evaluation in a row without improvement decays (patience 1)
    assert got == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def test_constant_schedule_has_no_scheduler_and_records_the_lr(synth_dataset):
    assert make_lr_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), TrainConfig()) is None
    cfg = load_config(preset="uniform-distmult", overrides=[*FAST, "train.lr_schedule=cosine",
                                                            "train.lr_min_factor=0.0"])
    lrs = [r["lr"] for r in train(cfg, dataset=synth_dataset).history]
    assert lrs[0] == pytest.approx(0.02) and lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0] / 2


# ------------------------------------------------------------------ sum fusion
def test_sum_fusion_adds_the_available_projected_features():
    torch.manual_seed(0)
    values = torch.randn(5, 3)
    mask = torch.tensor([True, False, True, True, False])

    class Table:
        pass

    table = Table()
    table.values, table.mask = values, mask
    ent = MultimodalEntities(5, 4, {"textual": table}, fusion="sum", init_range=0.5)
    got = ent(torch.arange(5))
    proj = ent.features["textual"].proj
    for i in range(5):
        want = ent.structural[i] + (proj(values[i]) if mask[i] else 0.0)
        torch.testing.assert_close(got[i], want)
    torch.testing.assert_close(ent.all_fused(), got)


def test_sum_fusion_is_a_config_choice():
    assert RunConfig.model_validate({"model": {"fusion": "sum"}}).model.fusion == "sum"


# ------------------------------------------------------------------ the feature side's learning rate
def test_feature_lr_factor_puts_the_feature_side_in_its_own_group(synth_dataset):
    cfg = load_config(preset="uniform-distmult", overrides=[*FAST, "model.fusion=attention",
                                                            "train.feature_lr_factor=0.1",
                                                            "train.lr_schedule=cosine"])
    model = KGEModel.from_config(cfg, synth_dataset)
    from dhns_search.training.loop import _param_groups

    groups = _param_groups(model, cfg.train)
    feature = {id(p) for p in groups[1]["params"]}
    assert id(model.entities.structural) not in feature and id(model.relations) not in feature
    assert id(model.entities.attention) in feature
    assert all(id(m.proj.weight) in feature for m in model.entities.features.values())
    assert groups[1]["lr"] == pytest.approx(0.002)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    # the cosine schedule anneals each group to the same fraction of its own rate
    opt = torch.optim.Adam(groups, lr=cfg.train.lr)
    sched = make_lr_scheduler(opt, cfg.train)
    for _ in range(cfg.train.epochs):
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"] == pytest.approx(0.1)
    slow = train(cfg, dataset=synth_dataset)
    fast = train(load_config(preset="uniform-distmult", overrides=[*FAST, "model.fusion=attention"]),
                 dataset=synth_dataset)
    assert slow.history[-1]["valid"] != fast.history[-1]["valid"]


# ------------------------------------------------------------------ reciprocal relations and N3
def test_reciprocal_model_answers_head_queries_with_the_inverse_relation(synth_dataset):
    cfg = load_config(preset="uniform-complex", overrides=[*FAST, *ONE_VS_ALL, "model.reciprocal=true"])
    model = KGEModel.from_config(cfg, synth_dataset)
    r_count = synth_dataset.num_relations
    assert model.num_relations == r_count and model.relations.shape[0] == 2 * r_count
    r, t = torch.tensor([0, 3]), torch.tensor([5, 7])
    ent = model.entities.all_fused()
    got = model.score_heads(r, t)
    for i in range(2):  # the head query (?, r, t) is the tail query (t, r + R, ?) of every candidate
        every = torch.arange(model.num_entities)
        want = model.scorer.score(ent[t[i]].expand(len(every), -1), model.relations[r[i] + r_count].expand(len(every), -1),
                                  ent[every])
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)
    plain = KGEModel.from_config(load_config(preset="uniform-complex", overrides=[*FAST, *ONE_VS_ALL]), synth_dataset)
    assert plain.relations.shape[0] == r_count
    result = train(cfg, dataset=synth_dataset)
    assert result.best_value > 0.05


def test_reciprocal_needs_one_vs_all():
    with pytest.raises(ConfigError, match="reciprocal"):
        load_config(preset="uniform-distmult", overrides=["model.reciprocal=true"])


@pytest.mark.parametrize("scorer", ["distmult", "complex", "rotate"])
def test_n3_penalty_equals_a_loop_over_the_batch(scorer, synth_dataset):
    extra = ONE_VS_ALL if scorer != "rotate" else []
    cfg = load_config(preset=f"uniform-{scorer}", overrides=[*FAST, *extra, "loss.regularizer=n3"])
    model = KGEModel.from_config(cfg, synth_dataset)
    batch = synth_dataset.train[:6]
    want = 0.0
    with torch.no_grad():  # the reference is plain arithmetic
        for h, r, t in batch.tolist():
            for vec, is_entity in ((model.entity(torch.tensor(h)), True), (model.relations[r], False),
                                   (model.entity(torch.tensor(t)), True)):
                if not is_entity and scorer == "rotate":
                    continue  # phases are not penalised
                if scorer in ("complex", "rotate") and (is_entity or scorer == "complex"):
                    d = vec.shape[0] // 2
                    want += sum(float(torch.sqrt(vec[i] ** 2 + vec[i + d] ** 2)) ** 3 for i in range(d))
                else:
                    want += float(vec.abs().pow(3).sum())
    got = model.batch_regularization(batch)
    assert got.item() == pytest.approx(want / len(batch), rel=1e-5)
    # the KGC term adds it with its weight
    term = KGCTerm(cfg, synth_dataset, torch.Generator().manual_seed(0))
    with_reg, _ = term(model, batch, BatchPosition(1, 0, 0))
    cfg0 = load_config(preset=f"uniform-{scorer}", overrides=[*FAST, *extra, "loss.reg_weight=0.0"])
    without, _ = KGCTerm(cfg0, synth_dataset, torch.Generator().manual_seed(0))(model, batch, BatchPosition(1, 0, 0))
    torch.testing.assert_close(with_reg - without, cfg.loss.reg_weight * got)
