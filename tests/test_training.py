"""End-to-end training on the embedded graph: every scorer learns, runs repeat bit for bit, failures are
clear, callbacks can stop a run, the run folder holds what ran."""

import json
import math

import pytest
import torch

from dhns_search.config import load_config
from dhns_search.config.models import RunConfig
from dhns_search.errors import ConfigError, TrainingError
from dhns_search.training.loop import StopTraining, train

# A small, quick DHNS configuration on the embedded graph (seconds per run on 2 cores).
FAST = [
    "model.dim=32",
    "negatives.num=16",
    "dhns.steps=10",
    "train.epochs=10",
    "train.eval_every=5",
    "train.batch_size=2048",
    "train.lr=0.02",
    "train.progress=false",
]


def _cfg(*extra, preset="dhns-distmult"):
    return load_config(preset=preset, overrides=[*FAST, *extra])


@pytest.mark.parametrize("scorer", ["transe", "rotate", "distmult", "complex"])
def test_dhns_trains_every_scorer_far_above_chance(scorer, synth_dataset):
    result = train(_cfg(preset=f"dhns-{scorer}"), dataset=synth_dataset)
    n = synth_dataset.num_entities
    chance = (math.log(n) + 0.5772) / n  # expected MRR of a uniformly random ranking (about 0.0116 here)
    mrr = result.best_valid["mrr_realistic_filtered"]
    assert mrr > 5 * chance, (scorer, mrr)
    assert result.test is not None and result.test["mrr_realistic_filtered"] > 5 * chance
    assert result.history and all(r["diffusion_loss"] > 0 for r in result.history)
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def _released(*extra):
    """``_cfg`` trained with the released code's signal: preset released-distmult-mkgy's ``dhns`` section (at
    10 steps) and its negatives' corruption order."""
    cfg, rel = _cfg(*extra).model_dump(), load_config(preset="released-distmult-mkgy")
    cfg["dhns"] = {**rel.dhns.model_dump(), "steps": 10}
    cfg["negatives"]["corrupt"] = rel.negatives.corrupt
    return RunConfig.model_validate(cfg)


@pytest.mark.parametrize("make", [_cfg, _released], ids=["shipped", "released"])
def test_repeatable_bit_for_bit_with_a_seed(make, synth_dataset):
    a = train(make("train.epochs=4"), dataset=synth_dataset)
    b = train(make("train.epochs=4"), dataset=synth_dataset)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(a.history) == strip(b.history)
    assert a.test == b.test
    c = train(make("train.epochs=4", "seed=1"), dataset=synth_dataset)
    assert strip(c.history) != strip(a.history)


def test_non_finite_loss_is_a_clear_training_error(synth_dataset):
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at epoch 1, batch 0"):
        train(_cfg("loss.reg_weight=1.0e308"), dataset=synth_dataset)  # .inf itself is refused by the config


def test_callbacks_see_every_evaluation_and_can_stop(synth_dataset):
    seen = []

    class Stopper:
        def on_evaluation(self, epoch, metrics, history):
            seen.append((epoch, metrics["mrr_realistic_filtered"], len(history)))
            if epoch >= 10:
                raise StopTraining("pruned at 10")

        def on_epoch_end(self, epoch, stats):
            assert stats["epoch_seconds"] > 0

    with pytest.raises(StopTraining, match="pruned at 10"):
        train(_cfg("train.epochs=20"), dataset=synth_dataset, callbacks=[Stopper()])
    assert [e for e, _, _ in seen] == [5, 10]
    assert [n for _, _, n in seen] == [1, 2]


def test_early_stopping_and_best_checkpoint_restored(synth_dataset, tmp_path):
    # lr so large that validation stalls: patience 1 stops after the first evaluation without progress
    result = train(
        _cfg("train.epochs=30", "train.eval_every=2", "train.patience=1", "train.lr=0.2"),
        dataset=synth_dataset,
        run_dir=tmp_path / "run",
    )
    evals = [r["epoch"] for r in result.history]
    assert result.stopped_early and result.epochs_run < 30 and evals[-1] == result.epochs_run
    values = [r["valid"]["mrr_realistic_filtered"] for r in result.history]
    assert result.best_value == max(values) and result.best_epoch == evals[values.index(max(values))]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["best"]["epoch"] == result.best_epoch and ckpt["best"]["generator"] is not None
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"config.yaml", "metrics.json", "checkpoint.pt", "result.json"}
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.device == "cpu"  # "auto" resolved to what ran
    assert json.loads((tmp_path / "run" / "result.json").read_text())["best_epoch"] == result.best_epoch


def test_uniform_baseline_runs_without_generator(synth_dataset):
    result = train(_cfg(preset="uniform-distmult"), dataset=synth_dataset)
    assert all(r["diffusion_loss"] == 0 and r["ha_loss"] == 0 for r in result.history)
    assert result.best_valid["mrr_realistic_filtered"] > 0.05


def test_unavailable_semantic_levels(synth_dataset):
    import dataclasses

    no_visual = dataclasses.replace(synth_dataset, features={"textual": synth_dataset.features["textual"]})
    cfg = _cfg("train.epochs=1", "dhns.modalities=[structural, visual]")
    result = train(cfg, dataset=no_visual)
    assert result.config.dhns.modalities == ["structural"]  # a standard level the dataset lacks is left out
    with pytest.raises(ConfigError, match="none of them is available"):
        train(_cfg("train.epochs=1", "dhns.modalities=[visual]"), dataset=no_visual)
    # a name that is neither standard nor a table of the dataset is a misspelling, refused
    with pytest.raises(ConfigError, match="'audio' is neither a standard modality"):
        train(_cfg("train.epochs=1", "dhns.modalities=[structural, audio]"), dataset=synth_dataset)


def test_zero_weight_levels_are_not_generated(synth_dataset):
    from dhns_search.models import KGEModel
    from dhns_search.training.dhns import DHNS

    cfg = _cfg()  # released levels [0, 1/10, 1/8, 1/4, 1/2] at T = 10 -> steps [0, 1, 1, 2, 5], weight 0 on the first
    model = KGEModel(synth_dataset.num_entities, synth_dataset.num_relations, cfg.model, synth_dataset.features)
    dhns = DHNS(model, cfg.dhns, cfg.model, cfg.loss)
    assert dhns.active == [1, 2, 3, 4] and dhns.kept == [1, 1, 2, 5]
    gen = dhns.generate(model, synth_dataset.train[:8], torch.Generator().manual_seed(0))
    assert len(gen.levels) == 4 and gen.levels[0].shape == (2, 8, 3, model.scorer.entity_width(cfg.model.dim))
    # the margin factors stay attached to their configured level: changing the dropped level's factor
    # changes nothing, changing an active one changes the loss
    base = dhns.hardness_loss(model, gen, epoch=1)
    dhns.cfg = cfg.dhns.model_copy(update={"margin": cfg.dhns.margin.model_copy(update={"factors": [5.0, 0.3, 0.5, 0.7, 0.9]})})
    assert torch.equal(dhns.hardness_loss(model, gen, epoch=1), base)
    dhns.cfg = cfg.dhns.model_copy(update={"margin": cfg.dhns.margin.model_copy(update={"factors": [0.1, 0.3, 0.5, 0.7, 5.0]})})
    assert not torch.equal(dhns.hardness_loss(model, gen, epoch=1), base)


@pytest.mark.parametrize("scorer", ["transe", "rotate", "distmult", "complex"])
def test_separate_head_and_tail_chains(scorer, synth_dataset):
    """Direction 0 generates tails conditioned on compose(h, r, 'tail'); direction 1 generates heads
    conditioned on compose(t, r, 'head') - the released code had no head chain of its own."""
    from dhns_search.models import KGEModel
    from dhns_search.training.dhns import DHNS, HEAD, TAIL

    cfg = _cfg(preset=f"dhns-{scorer}")
    model = KGEModel(synth_dataset.num_entities, synth_dataset.num_relations, cfg.model, synth_dataset.features)
    dhns = DHNS(model, cfg.dhns, cfg.model, cfg.loss)
    triples = synth_dataset.train[:16]
    h, r, t = triples.unbind(-1)
    x0, cond = dhns._conditions(model, triples, 0.0)
    vh, vt = dhns._vectors(model, h), dhns._vectors(model, t)
    rel = model.relation(r).unsqueeze(-2)
    torch.testing.assert_close(x0[TAIL], vt)
    torch.testing.assert_close(x0[HEAD], vh)
    torch.testing.assert_close(cond[TAIL], model.scorer.compose(vh, rel, "tail"))
    torch.testing.assert_close(cond[HEAD], model.scorer.compose(vt, rel, "head"))
    gen = dhns.generate(model, triples, torch.Generator().manual_seed(0))
    for level in gen.levels:  # two chains with their own conditions give different states
        assert not torch.allclose(level[TAIL], level[HEAD])


def test_fractions_and_refresh_set_the_rows_and_calls_per_batch(synth_dataset, monkeypatch):
    """dhns.generator_fraction sets the rows the diffusion loss trains on, dhns.batch_fraction the rows
    given generated negatives, dhns.refresh_every how often they are regenerated."""
    from dhns_search.training.dhns import DHNS

    seen = {"loss": [], "generate": [], "ha": []}
    loss, generate, ha = DHNS.diffusion_loss, DHNS.generate, DHNS.hardness_loss

    def spy(name, fn):
        def wrapped(self, model, triples_or_gen, *rest):
            rows = triples_or_gen.shape[0] if name != "ha" else triples_or_gen.triples.shape[0]
            seen[name].append(rows)
            return fn(self, model, triples_or_gen, *rest)

        return wrapped

    monkeypatch.setattr(DHNS, "diffusion_loss", spy("loss", loss))
    monkeypatch.setattr(DHNS, "generate", spy("generate", generate))
    monkeypatch.setattr(DHNS, "hardness_loss", spy("ha", ha))
    n = synth_dataset.train.shape[0]
    cfg = _cfg("train.epochs=1", "train.batch_size=1000", "dhns.generator_fraction=0.1",
               "dhns.batch_fraction=0.3", "dhns.refresh_every=2")
    train(cfg, dataset=synth_dataset)
    sizes = [min(1000, n - i) for i in range(0, n, 1000)]
    assert seen["loss"] == [math.ceil(0.1 * s) for s in sizes]
    assert seen["generate"] == [math.ceil(0.3 * s) for s in sizes[::2]]  # batches 0, 2, 4, ...
    assert len(seen["ha"]) == len(sizes)  # the cached negatives are used at every batch


def test_shared_conditions_change_nothing_but_the_work(synth_dataset, monkeypatch):
    """One detached computation of the conditions per batch (generator update + generation) trains
    bit for bit like computing them separately, and _conditions runs once per batch instead of twice."""
    from dhns_search.training.dhns import DHNS

    calls = []
    original = DHNS._conditions

    def counting(self, model, triples, grad_weight):
        calls.append(triples.shape[0])
        return original(self, model, triples, grad_weight)

    monkeypatch.setattr(DHNS, "_conditions", counting)
    cfg = _cfg("train.epochs=2", "train.batch_size=1000", "dhns.refresh_every=1")
    shared = train(cfg, dataset=synth_dataset)
    n_batches = math.ceil(synth_dataset.train.shape[0] / 1000) * 2
    assert len(calls) == n_batches

    calls.clear()
    monkeypatch.setattr(DHNS, "shared_conditions", lambda self, model, triples: None)
    separate = train(cfg, dataset=synth_dataset)
    assert len(calls) == 2 * n_batches
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(shared.history) == strip(separate.history)


def test_bf16_without_native_support_falls_back_to_fp32_with_a_warning(synth_dataset, monkeypatch):
    from dhns_search.errors import DhnsWarning
    from dhns_search.training import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: (False, "no avx512_bf16 or amx_bf16 flag"))
    with pytest.warns(DhnsWarning, match="fp32"):
        result = train(_cfg("train.epochs=1", "dhns.precision=bf16"), dataset=synth_dataset)
    assert result.config.dhns.precision == "fp32"  # the saved config says what ran
    fp32 = train(_cfg("train.epochs=1"), dataset=synth_dataset)
    assert result.history[0]["valid"] == fp32.history[0]["valid"]


def test_a_dataset_with_an_empty_split_is_refused_before_training(synth_dataset):
    import dataclasses

    from dhns_search.errors import DataError

    empty = dataclasses.replace(synth_dataset, valid=synth_dataset.valid[:0])
    with pytest.raises(DataError, match="valid split is empty"):
        train(_cfg("train.epochs=1"), dataset=empty)
