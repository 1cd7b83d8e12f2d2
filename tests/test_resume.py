"""A run checkpoints its full state and a resumed run ends bit for bit where an uninterrupted one ends."""

import pytest
import torch
from stopping import StopAfter

from dhns_search.config import load_config
from dhns_search.errors import TrainingError
from dhns_search.training.checkpoint import FORMAT, load_checkpoint
from dhns_search.training.loop import TrainingInterrupted, train

FAST = ["model.dim=16", "negatives.num=8", "dhns.steps=10", "train.epochs=4", "train.eval_every=2",
        "train.batch_size=1500", "train.lr=0.02", "train.progress=false"]


def _strip(history):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in history]


def _resumed(cfg, dataset, run_dir, stops):
    """Train with an interruption after each number of batches in ``stops``, then to the end."""
    for i, n in enumerate(stops):
        with pytest.raises(TrainingInterrupted) as info:
            train(cfg, dataset=dataset, run_dir=run_dir, resume=i > 0, stop=StopAfter(n))
        assert info.value.checkpoint == run_dir / "checkpoint.pt"
    return train(cfg, dataset=dataset, run_dir=run_dir, resume=True)


@pytest.mark.parametrize("extra", [
    [],  # the cheap DHNS default: cached negatives are carried across the interruption
    ["dhns.kgc_diffusion_weight=1.0", "dhns.refresh_every=3"],
    ["dhns.enabled=false", "negatives.filtered=true"],
    # the schedule's state (decays so far) must come back with the checkpoint
    ["dhns.enabled=false", "negatives.sampler=all", "negatives.corrupt=both", "loss.kind=cross_entropy",
     "train.lr_schedule=plateau", "train.lr_patience=0", "train.lr_decay=0.3"],
    ["train.lr_schedule=cosine"],
], ids=["dhns", "dhns-undetached", "uniform", "one-vs-all-plateau", "dhns-cosine"])
def test_resumed_run_ends_bit_for_bit_where_the_uninterrupted_one_ends(extra, synth_dataset, tmp_path):
    cfg = load_config(preset="dhns-distmult", overrides=[*FAST, *extra])
    whole = train(cfg, dataset=synth_dataset)
    n = -(-synth_dataset.train.shape[0] // 1500)  # batches per epoch
    # mid-epoch in epoch 1, then right after the evaluation of epoch 2, then mid-epoch in epoch 4
    resumed = _resumed(cfg, synth_dataset, tmp_path / "run", [1, 2 * n - 1, n + 1])
    assert _strip(resumed.history) == _strip(whole.history)
    assert resumed.test == whole.test and resumed.best_epoch == whole.best_epoch


def test_checkpoint_holds_everything_needed_to_continue(synth_dataset, tmp_path):
    cfg = load_config(preset="dhns-distmult", overrides=FAST)
    result = train(cfg, dataset=synth_dataset, run_dir=tmp_path / "run")
    data = load_checkpoint(tmp_path / "run")
    assert data["format"] == FORMAT
    assert set(data) >= {"config", "state", "model", "optimizer", "terms", "rng", "best"}
    state = data["state"]
    assert state["epoch"] == 4 and state["batch"] == 0 and state["perm"] is None
    assert state["global_batch"] == 4 * -(-synth_dataset.train.shape[0] // 1500)
    assert len(state["history"]) == 2 and state["best_epoch"] == result.best_epoch
    assert data["best"]["epoch"] == result.best_epoch and data["best"]["generator"] is not None
    dhns = data["terms"]["dhns"]
    assert {"generator", "optimizer", "rng", "cached"} <= set(dhns) and dhns["cached"]["levels"]
    assert data["optimizer"]["state"]  # Adam moments, not an empty optimiser
    assert set(data["rng"]) >= {"torch", "index"}


def test_resume_refuses_another_config_and_missing_or_old_checkpoints(synth_dataset, tmp_path):
    cfg = load_config(preset="dhns-distmult", overrides=FAST)
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        train(cfg, dataset=synth_dataset, run_dir=tmp_path / "none", resume=True)
    with pytest.raises(TrainingInterrupted):
        train(cfg, dataset=synth_dataset, run_dir=tmp_path / "run", stop=StopAfter(1))
    other = load_config(preset="dhns-distmult", overrides=[*FAST, "train.lr=0.01"])
    with pytest.raises(TrainingError, match=r"another configuration \(train.lr: 0.02 -> 0.01\)"):
        train(other, dataset=synth_dataset, run_dir=tmp_path / "run", resume=True)
    # where the configuration came from is not what trains: a provenance of its own resumes the same run
    noted = cfg.model_copy(update={"provenance": {"study": "s", "trial": 3, "seed": 9}})
    assert train(noted, dataset=synth_dataset, run_dir=tmp_path / "run", resume=True).history[-1]["epoch"] == \
        cfg.train.epochs
    (tmp_path / "old").mkdir()
    torch.save({"config": {}, "epoch": 3, "model": {}}, tmp_path / "old" / "checkpoint.pt")
    with pytest.raises(TrainingError, match="checkpoint format 1"):
        load_checkpoint(tmp_path / "old")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"\x80\x04 truncated")
    with pytest.raises(TrainingError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad")
