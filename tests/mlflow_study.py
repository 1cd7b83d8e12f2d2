"""Shared by the MLflow comparison tests: a small study with every outcome (two completed trials, one
pruned, one failed), run with a deterministic fake trainer and pruner into a given tracking store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from fake_training import fake_run, write_space

from dhns_search.errors import TrainingError
from dhns_search.search import runner as runner_mod
from dhns_search.search.options import RunOptions
from dhns_search.search.runner import StudySummary, run_study
from dhns_search.training.loop import TrainResult

#: negatives.num 8: an export replays with the real trainer (test_browser_ui), whose candidate scorer
#: fails with the default 32 negatives on this 30-entity graph
SPACE = """
    description: Comparison test space; a fake trainer gives every trial its outcome.
    fixed: {data.synth.num_entities: 30, data.synth.num_triples: 200, train.epochs: 3, train.eval_every: 1,
            negatives.num: 8}
    params:
      train.lr: {type: float, low: 0.001, high: 0.1, log: true}
      model.scorer: {type: categorical, choices: [distmult, transe, rotate]}
      model.gamma: {type: float, low: 2.0, high: 10.0, when: {model.scorer: [transe, rotate]}}
"""

#: trial number -> warm start; 0 and 3 complete (3 is the best), 1 is pruned at epoch 2, 2 fails (nan)
WARM = [
    {"model.scorer": "distmult", "train.lr": 0.02},
    {"model.scorer": "rotate", "model.gamma": 5.0, "train.lr": 0.01},
    {"model.scorer": "transe", "model.gamma": 9.0, "train.lr": 0.01},
    {"model.scorer": "distmult", "train.lr": 0.05},
]
OUTCOMES = {0: "COMPLETE", 1: "PRUNED", 2: "FAIL", 3: "COMPLETE"}
BEST = 3


def fake_train(cfg, *, dataset=None, callbacks=(), run_dir=None):
    """The trainer's stand-in: transe with a large gamma diverges, the value grows with lr and epoch."""
    if cfg.model.scorer == "transe" and cfg.model.gamma > 7:
        raise TrainingError("the KGC loss is nan at epoch 1, batch 0")
    return fake_run(cfg, callbacks, value=lambda epoch: cfg.train.lr * 10 * epoch / cfg.train.epochs,
                    stats=lambda epoch: {"diffusion_loss": 0.5 / epoch, "epoch_seconds": 0.01},
                    fingerprint=dataset.fingerprint() if dataset is not None else "fake")


def fake_seed_train(cfg, *, dataset=None, callbacks=(), run_dir=None):
    """The trainer for replays: the fake curve of the study, plus test metrics."""
    result = fake_run(cfg, callbacks, value=lambda epoch: cfg.train.lr * 10 * epoch / 3,
                      stats=lambda epoch: {"diffusion_loss": 0.5 / epoch, "epoch_seconds": 0.01},
                      fingerprint=dataset.fingerprint())
    return TrainResult(**{**result.__dict__, "test": {"mrr_realistic_filtered": 0.25 + cfg.seed % 7 / 100}})


class PruneRotateFromStep2(optuna.pruners.BasePruner):
    """Prunes trials with the rotate scorer once they reported epoch 2."""

    def prune(self, study, trial) -> bool:
        return trial.params.get("model.scorer") == "rotate" and (trial.last_step or 0) >= 2


@dataclass
class ComparisonStudy:
    name: str
    tracking: str
    storage: str
    summary: StudySummary


def run_comparison_study(folder: Path, tracking: str, monkeypatch, *, name: str = "compare",
                         **options) -> ComparisonStudy:
    """Run the four-trial study ``name`` (space and warm starts written into ``folder``)."""
    space = write_space(folder, f"{name}.yaml", SPACE, WARM, f"{name}-warm")
    storage = f"sqlite:///{folder / 'studies.db'}"
    monkeypatch.setattr(runner_mod, "make_pruner", lambda *_: PruneRotateFromStep2())
    opts = RunOptions(space=space, study=name, storage=storage, tracking_uri=tracking, sampler="random",
                      n_trials=len(WARM), enqueue=[str(folder / f"{name}-warm{i}.yaml") for i in range(len(WARM))],
                      **options)
    return ComparisonStudy(name, tracking, storage, run_study(opts, trainer=fake_train))
