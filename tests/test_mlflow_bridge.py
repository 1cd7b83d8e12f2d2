"""The MLflow bridge against a real SQLite tracking store, driven by a fake sequence of trial events,
and the pruning callback driven by a deterministic pruner."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import math

import optuna
import pytest
from mlflow.tracking import MlflowClient

from dhns_search.search.seeds import trial_seed
from dhns_search.search.space import apply, flatten_config
from dhns_search.search.trial import TrialCallback
from dhns_search.tracking.study import MlflowBridge
from dhns_search.tracking.tracker import artifact_root_for
from dhns_search.training.loop import StopTraining

# MLflow 3.17 on SQLAlchemy 2.1 warns about its own ORM options; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    """One SQLite tracking store for the module (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


def parents_of(client: MlflowClient, experiment_id: str, study: str) -> list:
    flt = f"tags.`dhns.study` = '{study}' and tags.`dhns.role` = 'parent'"
    return client.search_runs([experiment_id], filter_string=flt)


def children_of(client: MlflowClient, experiment_id: str, parent_id: str) -> dict[int, object]:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {int(r.data.tags["dhns.trial_number"]): r for r in runs}


def test_fake_trial_events_make_one_parent_and_one_child_per_trial(tracking):
    bridge = MlflowBridge(tracking, "fake-study", study_uid="uid-1")
    parent = bridge.start_study({"dhns.sampler": "tpe"})
    configs = [apply({}, {}, {"train.lr": 0.01}), apply({}, {}, {"model.scorer": "transe"}),
               apply({}, {}, {"dhns.levels": "0,0.5", "dhns.level_weights": "1,1", "dhns.margin.factors": "0.2,0.8"})]

    # trial 0 completes after 3 evaluations, trial 1 is pruned at epoch 2, trial 2 fails at epoch 1
    events = {0: ("COMPLETE", 3, None), 1: ("PRUNED", 2, "pruned at epoch 2"), 2: ("FAIL", 1, "TrainingError: loss is nan")}
    for number, (state, last, reason) in events.items():
        run = bridge.start_trial(number, flatten_config(configs[number]), {"dhns.seed": trial_seed(0, number)})
        for epoch in range(1, last + 1):
            run.log_metrics({"train_loss": 1.0 / epoch, "diffusion_loss": 2.0 / epoch, "epoch_seconds": 0.1},
                            step=epoch)
            run.log_validation({"mrr_realistic_filtered": 0.1 * epoch, "mrr_optimistic_filtered": 0.2}, step=epoch)
        run.log_text("seed: 1\n", "config.yaml")
        run.end(state, value=0.3 if state == "COMPLETE" else 0.2, reason=reason, epoch=last)
        bridge.log_parent_metrics({"best_value": 0.3}, step=number)
    bridge.end_study()

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("fake-study")
    assert exp.artifact_location == (artifact_root_for(tracking) / "fake-study").as_uri()
    parents = parents_of(client, exp.experiment_id, "fake-study")
    assert [p.info.run_id for p in parents] == [parent]
    assert parents[0].info.status == "FINISHED"
    children = children_of(client, exp.experiment_id, parent)
    assert sorted(children) == [0, 1, 2]
    all_runs = client.search_runs([exp.experiment_id])
    assert len(all_runs) == 4  # no orphan or duplicate run

    # a pruned trial is not a failure: FINISHED, its state and where it stopped in tags
    assert [children[n].info.status for n in range(3)] == ["FINISHED", "FINISHED", "FAILED"]
    assert [children[n].data.tags["dhns.state"] for n in range(3)] == ["COMPLETE", "PRUNED", "FAIL"]
    assert children[1].data.tags["dhns.pruned_epoch"] == "2" and children[1].data.tags["dhns.pruned_value"] == "0.2"
    assert children[1].data.tags["mlflow.note.content"].startswith("**Pruned** at epoch 2")
    assert children[2].data.tags["dhns.fail_reason"] == "TrainingError: loss is nan"
    assert children[2].data.tags["mlflow.note.content"] == "**Failed**: TrainingError: loss is nan"
    # the state next to the number, where the runs table shows it first
    assert [children[n].info.run_name for n in range(3)] == ["trial-0000", "trial-0001 (pruned)", "trial-0002 (failed)"]
    assert children[0].data.tags["dhns.value"] == "0.3"

    # the same param keys in every trial, and the full flattened config (not only sampled params)
    keys = [set(children[n].data.params) for n in range(3)]
    assert keys[0] == keys[1] == keys[2]
    assert {"train.lr", "model.scorer", "dhns.levels", "data.synth.num_entities"} <= keys[0]
    assert children[2].data.params["dhns.levels"] == "0.0,0.5"

    assert "valid_mrr_optimistic_filtered" not in children[0].data.metrics  # the lean set: one rank policy
    history = client.get_metric_history(children[0].info.run_id, "valid_mrr")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert [m.step for m in client.get_metric_history(children[1].info.run_id, "train_loss")] == [1, 2]
    artifacts = [a.path for a in client.list_artifacts(children[0].info.run_id)]
    assert artifacts == ["config.yaml"]


def test_parent_is_found_again_by_tags_and_a_new_study_gets_its_own(tracking):
    first = MlflowBridge(tracking, "continued", study_uid="uid-a")
    parent = first.start_study()
    first.end_study()
    again = MlflowBridge(tracking, "continued", study_uid="uid-a")  # e.g. another process, later
    assert again.start_study() == parent
    client = MlflowClient(tracking)
    assert client.get_run(parent).info.status == "RUNNING"  # running again while the study runs
    again.end_study()
    assert client.get_run(parent).info.status == "FINISHED"

    # the study was deleted and made again under the same name: a new uid, a new parent
    other = MlflowBridge(tracking, "continued", study_uid="uid-b")
    assert other.start_study() != parent
    other.end_study("KILLED")
    exp = client.get_experiment_by_name("continued")
    assert len(parents_of(client, exp.experiment_id, "continued")) == 2


def test_reconcile_ends_children_left_running_by_a_dead_process(tracking):
    bridge = MlflowBridge(tracking, "crashed", study_uid="uid-c")
    bridge.start_study()
    bridge.start_trial(0, {"a": "1"})  # never ended: the process "died"
    done = bridge.start_trial(1, {"a": "2"})
    done.end("COMPLETE", value=0.5)
    assert bridge.reconcile({0: "FAIL", 1: "COMPLETE"}) == 1
    client = MlflowClient(tracking)
    runs = children_of(client, bridge.experiment_id, bridge.parent_run_id)
    assert runs[0].info.status == "FAILED" and "stopped" in runs[0].data.tags["dhns.fail_reason"]
    assert bridge.reconcile({0: "FAIL", 1: "COMPLETE"}) == 0
    bridge.end_study()


# --------------------------------------------------------------------------------- pruning callback
class PruneFromStep(optuna.pruners.BasePruner):
    """Deterministic test double: prune every trial once it has reported step >= ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step is not None and trial.last_step >= self.step


def client_metric(tracking: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a metric's history in the order it was logged."""
    history = MlflowClient(tracking).get_metric_history(run_id, key)
    return [(m.step, m.value) for m in sorted(history, key=lambda m: (m.timestamp, m.step))]


def test_callback_reports_each_evaluation_and_stops_training_when_pruned(tracking):
    study = optuna.create_study(direction="maximize", pruner=PruneFromStep(2))
    bridge = MlflowBridge(tracking, "pruning", study_uid="uid-p")
    bridge.start_study()
    trial = study.ask()
    run = bridge.start_trial(trial.number, {"a": "1"})
    cb = TrialCallback(trial, "mrr_realistic_filtered", run)
    history: list[dict] = []

    cb.on_epoch_end(1, {"train_loss": 0.9, "diffusion_loss": 0.5, "epoch_seconds": 0.1})
    history.append({"epoch": 1, "eval_seconds": 0.01})
    cb.on_evaluation(1, {"mrr_realistic_filtered": 0.2, "hits_at_10_realistic_filtered": 0.4}, history)
    cb.on_epoch_end(2, {"train_loss": 0.8, "diffusion_loss": 0.4, "epoch_seconds": 0.1})
    history.append({"epoch": 2, "eval_seconds": 0.01})
    with pytest.raises(StopTraining, match="pruned at epoch 2"):
        cb.on_evaluation(2, {"mrr_realistic_filtered": 0.25, "hits_at_10_realistic_filtered": 0.5}, history)
    assert client_metric(tracking, run.run_id, "objective") == [(1, 0.2), (2, 0.25)]  # the best so far, live
    assert MlflowClient(tracking).get_run(run.run_id).info.run_name == "trial-0000 (running)"
    run.end("PRUNED", value=0.25, epoch=2)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    # pruned: no objective (NaN, after its live values, at the same epoch), and its name says so
    objective = client_metric(tracking, run.run_id, "objective")
    assert objective[:2] == [(1, 0.2), (2, 0.25)] and objective[2][0] == 2 and math.isnan(objective[2][1])
    assert math.isnan(MlflowClient(tracking).get_run(run.run_id).data.metrics["objective"])
    assert MlflowClient(tracking).get_run(run.run_id).info.run_name == "trial-0000 (pruned)"

    frozen = study.trials[0]
    assert frozen.intermediate_values == {1: 0.2, 2: 0.25}
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert cb.best == 0.25 and cb.last_epoch == 2
    client = MlflowClient(tracking)
    steps = [m.step for m in client.get_metric_history(run.run_id, "valid_hits_at_10")]
    assert steps == [1, 2]
    assert [m.value for m in client.get_metric_history(run.run_id, "train_loss")] == [0.9, 0.8]
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert client.get_run(run.run_id).data.tags["dhns.state"] == "PRUNED"
    bridge.end_study()


def test_trial_seeds_are_stable_and_distinct():
    seeds = [trial_seed(0, n) for n in range(100)]
    assert len(set(seeds)) == 100 and all(0 <= s < 2**31 for s in seeds)
    assert trial_seed(0, 3) == trial_seed(0, 3) != trial_seed(1, 3)
    assert trial_seed(0, 0) == 1179883768  # stable across processes and versions (sha256, not hash())


def test_the_tracker_logs_what_a_table_needs_and_finds_runs_by_their_tags(tracking):
    from dhns_search.tracking.tracker import Tracker, ordered_params, searched_params

    tracker = Tracker(tracking)
    experiment = tracker.experiment("interface", description="what the writers use")
    run = tracker.start_run(experiment, "one", tags={"dhns.role": "trial", "dhns.unset": None}, device="cpu")
    run.log_metrics({"valid_mrr": 0.2314893199749418, "peak_memory_mb": 571.12890625, "best_epoch": 12,
                     "train_seconds": 12345.6, "note": "not a number"}, step=3)
    searched = searched_params({"train.lr": 0.04970288062055332, "model.scorer": "transe", "dhns.levels": [0.0, 0.5],
                                "negatives.num": 32})
    assert searched == {"train.lr": "0.0497", "model.scorer": "transe", "dhns.levels": "0.0,0.5", "negatives.num": "32"}
    run.log_params(ordered_params(searched, {"train.lr": "0.04970288062055332", "train.epochs": "40"},
                                  space=["train.lr", "model.gamma"]))
    run.end("FINISHED")
    found = tracker.find_runs(experiment, {"dhns.role": "trial"})
    assert [r.run_id for r in found] == [run.run_id] and tracker.find_runs(experiment, {"dhns.role": "replay"}) == []
    record = found[0]
    # metrics to 4 significant digits, the integer part kept; integers as they are
    assert record.metrics == {"valid_mrr": 0.2315, "peak_memory_mb": 571.1, "best_epoch": 12, "train_seconds": 12346}
    assert list(record.params) == ["train.lr", "model.scorer", "dhns.levels", "negatives.num", "zconfig.train.epochs"]
    assert "dhns.unset" not in record.tags and record.status == "FINISHED" and record.name == "one"


def test_a_retried_trial_reporting_its_inherited_epochs_again_is_quiet(recwarn):
    """A trial retried on a machine without its checkpoint trains from epoch 1 again and reports the epochs its
    first attempt reported (inherited by the retry): the first value stands, without Optuna's warning."""
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.report(0.3, step=1)  # what the first attempt reported (inherit_intermediate_values)
    cb = TrialCallback(trial, "mrr_realistic_filtered")
    cb.on_evaluation(1, {"mrr_realistic_filtered": 0.3}, [{"epoch": 1}])
    cb.on_evaluation(2, {"mrr_realistic_filtered": 0.35}, [{"epoch": 2}])
    assert not [w for w in recwarn if "already reported" in str(w.message)]
    assert study.trials[0].intermediate_values == {1: 0.3, 2: 0.35}
