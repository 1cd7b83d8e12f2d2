"""What a researcher compares in MLflow, read back through ``MlflowClient``: the experiment opens as a
model-training experiment on saved views, each trial logs a lean and stable metric set and its searched
parameters first, pruned trials finish (not fail), failed ones fail with the reason, every run carries its
provenance and dataset, the parent's description is the leaderboard, its artifacts hold interactive plots,
and a replay of an export is logged next to its trial."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow_study import BEST, OUTCOMES, fake_seed_train, run_comparison_study

from dhns_search.search import trial_data
from dhns_search.search.export import export_trials, trial_config
from dhns_search.search.storage import open_study
from dhns_search.tracking.metrics import rounded
from dhns_search.tracking.provenance import git_revision
from dhns_search.tracking.train_runs import train_tracked
from dhns_search.tracking.views import (
    COMPARE_VIEW,
    LEADERBOARD_VIEW,
    SHARED_VIEW_PREFIX,
    TRIALS_VIEW,
    decode_view,
)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

LEAN = {"train_loss", "diffusion_loss", "epoch_seconds", "eval_seconds", "valid_mrr", "valid_hits_at_10",
        "objective", "best_epoch", "best_valid_mrr", "best_valid_hits_at_10", "mean_epoch_seconds", "train_seconds",
        "peak_memory_mb"}
SEARCHED = ["train.lr", "model.scorer", "model.gamma"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        return run_comparison_study(folder, f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}", mp)


@pytest.fixture(scope="module")
def client(study) -> MlflowClient:
    return MlflowClient(study.tracking)


@pytest.fixture(scope="module")
def runs(study, client) -> dict:
    """The study's runs: "parent", and each trial's run by its number."""
    out = {}
    for run in client.search_runs([study.summary.experiment_id]):
        role = run.data.tags["dhns.role"]
        out["parent" if role == "parent" else int(run.data.tags["dhns.trial_number"])] = run
    return out


def test_the_experiment_opens_as_model_training_on_the_leaderboard_view(study, client):
    exp = client.get_experiment(study.summary.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"].startswith("Comparison test space")
    name, board = decode_view(exp.tags[SHARED_VIEW_PREFIX + LEADERBOARD_VIEW])
    assert "leaderboard" in name
    assert board["orderByKey"] == "metrics.`objective`" and board["orderByAsc"] is False  # best first
    assert board["selectedColumns"][:4] == ["metrics.`objective`", *(f"params.`{p}`" for p in SEARCHED)]
    assert "tags.`dhns.state`" in board["selectedColumns"] and board["runsHiddenMode"] == "SHOW_ALL"
    _, nested = decode_view(exp.tags[SHARED_VIEW_PREFIX + TRIALS_VIEW])
    assert nested["orderByKey"] == "attributes.start_time" and nested["selectedColumns"] == board["selectedColumns"]
    _, charts = decode_view(exp.tags[SHARED_VIEW_PREFIX + COMPARE_VIEW])
    assert charts["selectedColumns"] == board["selectedColumns"] and charts["orderByKey"] == board["orderByKey"]
    cards = {c["uuid"]: c for c in charts["compareRunCharts"]}
    assert [cards[f"dhns-scatter-{p}"]["xaxis"] for p in SEARCHED] == [{"key": p, "type": "PARAM"} for p in SEARCHED]
    # model.gamma is conditional (absent for distmult): the parallel coordinates would drop those trials
    assert cards["dhns-parallel"]["selectedParams"] == ["train.lr", "model.scorer"]
    assert cards["dhns-valid-curves"]["metricKey"] == "valid_mrr"


def test_each_trial_logs_the_same_lean_metric_set(runs, client, study, tmp_path):
    for number in (0, 3):
        assert set(runs[number].data.metrics) == LEAN, number
    # 4 significant digits in MLflow, the exact value in the tag (and the Optuna storage)
    assert runs[BEST].data.metrics["objective"] == rounded(study.summary.best_value)
    assert float(runs[BEST].data.tags["dhns.value"]) == study.summary.best_value
    # the best epoch's metrics, not the last epoch's, next to the objective (trial 0 peaks at its last epoch)
    assert runs[BEST].data.metrics["best_valid_mrr"] == runs[BEST].data.metrics["objective"]
    assert runs[BEST].data.metrics["best_valid_hits_at_10"] == rounded(min(1.0, 2 * study.summary.best_value))
    assert runs[BEST].data.tags["mlflow.note.content"].startswith("**Complete.** Best epoch 3 of 3: valid mrr 0.5")
    assert not {"dhns.retry_of", "dhns.resumed"} & set(runs[0].data.tags)  # no None tags
    # while it ran: the best value so far at each evaluation (then the final one)
    live = client.get_metric_history(runs[0].info.run_id, "objective")
    assert [(m.step, m.value) for m in sorted(live, key=lambda m: (m.step, m.timestamp))][:3] == [
        (1, rounded(0.02 * 10 / 3)), (2, rounded(0.02 * 10 * 2 / 3)), (3, 0.2)]
    history = client.get_metric_history(runs[0].info.run_id, "valid_mrr")
    assert [m.step for m in history] == [1, 2, 3]
    assert runs[0].data.tags["dhns.rank_policy"] == "realistic"
    # the full breakdown is in the trial's result.json
    path = client.download_artifacts(runs[0].info.run_id, "result.json", dst_path=str(tmp_path))
    result = json.loads(Path(path).read_text())
    assert "hits_at_10_realistic_filtered" in result["best_valid"] and len(result["history"]) == 3


def test_the_full_metric_set_is_behind_a_setting(tmp_path, monkeypatch):
    full = run_comparison_study(tmp_path, f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", monkeypatch,
                                name="full", mlflow_metrics="full")
    client = MlflowClient(full.tracking)
    trial = client.search_runs([full.summary.experiment_id], "tags.`dhns.trial_number` = '0'")[0]
    assert {"valid_mrr", "valid_mrr_realistic_filtered", "valid_hits_at_10_realistic_filtered"} <= set(
        trial.data.metrics)


def test_searched_parameters_come_first_and_the_rest_under_a_prefix(runs):
    params = runs[0].data.params
    assert list(params)[:2] == ["train.lr", "model.scorer"]  # trial 0 (distmult) has no gamma
    assert list(params)[2].startswith("zconfig.")
    assert all(k.startswith("zconfig.") for k in params if k not in SEARCHED)
    assert params["zconfig.train.epochs"] == "3" and "zconfig.train.lr" not in params
    assert sorted(params)[:2] == ["model.scorer", "train.lr"]  # sorted too, the searched ones come first
    assert list(runs[1].data.params)[:3] == SEARCHED


def test_a_pruned_trial_finishes_and_a_failed_one_fails_with_its_reason(runs):
    states = {n: runs[n].data.tags["dhns.state"] for n in OUTCOMES}
    assert states == OUTCOMES
    pruned, failed = runs[1], runs[2]
    assert pruned.info.status == "FINISHED"
    # the state next to the number: the first column of the leaderboard tells them apart
    assert [runs[n].info.run_name for n in range(4)] == ["trial-0000", "trial-0001 (pruned)", "trial-0002 (failed)",
                                                          "trial-0003"]
    assert pruned.data.tags["dhns.pruned_epoch"] == "2"
    assert float(pruned.data.tags["dhns.pruned_value"]) == pytest.approx(0.01 * 10 * 2 / 3)
    assert pruned.data.tags["mlflow.note.content"] == ("**Pruned** at epoch 2 (its mrr_realistic_filtered was "
                                                       "0.0667): the pruner stopped it, so it has no objective.")
    # its best value so far while it ran, then NaN: no objective to rank it by (sorted after every value)
    assert math.isnan(pruned.data.metrics["objective"])
    assert failed.info.status == "FAILED"
    assert "loss is nan" in failed.data.tags["dhns.fail_reason"]
    assert "objective" not in failed.data.metrics  # it failed before its first evaluation
    assert failed.data.tags["mlflow.note.content"].startswith("**Failed**: ") and "nan" in failed.data.tags[
        "mlflow.note.content"]
    assert all(runs[n].info.status == "FINISHED" for n in (0, 3)) and runs["parent"].info.status == "FINISHED"


def test_every_run_carries_its_provenance_and_the_dataset_input(runs, study):
    loaded, _ = open_study(study.name, study.storage)
    fingerprint = loaded.trials[0].user_attrs["dataset_fingerprint"]
    revision = git_revision()
    for key, run in runs.items():
        tags = run.data.tags
        assert tags["dhns.version.dhns-search"] and tags["dhns.version.mlflow"] and tags["dhns.version.torch"], key
        assert tags["dhns.device"] == "cpu" and tags["dhns.device_name"], key
        if revision is not None:
            assert tags["mlflow.source.git.commit"] == revision[0], key
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "synthetic" and dataset.dataset.digest == fingerprint[:16], key
        profile = json.loads(dataset.dataset.profile)
        assert profile["fingerprint"] == fingerprint and profile["entities"] == 30 and profile["train"] > 0
        assert {t.key: t.value for t in dataset.tags} == {"mlflow.data.context": "training"}


def test_the_parent_describes_the_leaderboard_and_holds_interactive_plots(runs, client, study, tmp_path):
    parent = runs["parent"]
    text = parent.data.tags["mlflow.note.content"]
    assert text.startswith("**Study compare**: valid mrr (realistic) (max). 4 trials: 2 complete, 1 pruned, "
                           "1 failed.")
    rows = [line for line in text.splitlines() if line.startswith(("| 1 ", "| 2 "))]
    assert rows[0].startswith(f"| 1 | {BEST} |") and rows[1].startswith("| 2 | 0 |")
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    for name in ("optimization_history", "intermediate_values", "parallel_coordinate", "param_importances"):
        assert f"plots/{name}.png" in plots, name
    assert "plots/interactive.html" in plots and not any(p.endswith(".html") for p in plots - {"plots/interactive.html"})
    html = Path(client.download_artifacts(parent.info.run_id, "plots/interactive.html",
                                          dst_path=str(tmp_path))).read_text()
    assert "valid mrr (realistic)" in html and html.count("Plotly.newPlot") == 4
    # one click from the run's page: the first paragraph links to the page on the Artifacts tab
    link = f"(#/experiments/{study.summary.experiment_id}/runs/{parent.info.run_id}/artifacts/plots/interactive.html)"
    assert link in text.split("\n\n")[0]
    assert parent.data.tags["dhns.plots"] == "plots/interactive.html"  # the link stays while a later run continues


def test_trial_records_stay_out_of_the_user_attributes_and_export_still_replays(study, runs):
    loaded, _ = open_study(study.name, study.storage)
    best = loaded.trials[BEST]
    assert not {"config", "params", "best_valid"} & set(best.user_attrs)
    assert all(not isinstance(v, (dict, list)) for v in best.user_attrs.values())  # one readable line each
    assert trial_data.read(best, "config")["train"]["lr"] == 0.05
    assert loaded.metric_names == ["valid mrr (realistic)"]
    cfg = trial_config(loaded, best)
    assert cfg.train.lr == 0.05 and cfg.provenance["valid_value"] == study.summary.best_value
    assert cfg.provenance["mlflow_run_id"] == runs[BEST].info.run_id


def test_a_replay_is_logged_under_its_trial_and_each_links_to_the_other(study, runs, client, tmp_path, monkeypatch):
    import dhns_search.training.runs as runs_mod

    monkeypatch.setattr(runs_mod, "train", fake_seed_train)
    loaded, _ = open_study(study.name, study.storage)
    [(_, cfg)] = export_trials(loaded, out=tmp_path / "best.yaml")
    summary, tracked = train_tracked(cfg, name="best", seeds=2, tracking_uri=study.tracking)
    assert tracked.experiment == study.name and tracked.replay_of == runs[BEST].info.run_id
    replays = client.search_runs([study.summary.experiment_id], "tags.`dhns.role` = 'replay'")
    by_id = {r.info.run_id: r for r in replays}
    assert set(by_id) == {*tracked.run_ids, tracked.summary_run_id}
    first = by_id[tracked.run_ids[0]]
    trial_id = runs[BEST].info.run_id
    assert first.data.tags["dhns.replay_of"] == trial_id
    # nested: the seeds under the summary run, the summary under the trial's run
    assert first.data.tags["mlflow.parentRunId"] == tracked.summary_run_id
    assert by_id[tracked.summary_run_id].data.tags["mlflow.parentRunId"] == trial_id
    assert first.info.run_name == f"trial-{BEST:04d} replay (seed {cfg.seed})"
    assert by_id[tracked.summary_run_id].info.run_name == f"trial-{BEST:04d} replay (2 seeds)"
    assert first.data.tags["dhns.state"] == "REPLAY" and first.data.tags["dhns.trial_number"] == str(BEST)
    link = f"[trial {BEST}](#/experiments/{study.summary.experiment_id}/runs/{trial_id})"
    assert first.data.tags["mlflow.note.content"].startswith(f"Replay of {link} of study {study.name}, seed ")
    assert "reproduced exactly" in first.data.tags["mlflow.note.content"]
    assert first.data.tags["dhns.reproduction"] == "reproduced exactly"
    assert summary.results[0].best_value == study.summary.best_value
    assert first.data.metrics["objective"] == rounded(study.summary.best_value)
    # the trial's page lists its replays, each a link to its run
    trial = client.get_run(trial_id)
    text = trial.data.tags["mlflow.note.content"]
    assert text.startswith("**Complete.**") and "\n\n**Replays**\n\n" in text
    for run_id in tracked.run_ids:
        seed = by_id[run_id].data.tags["dhns.seed"]
        assert f"- [trial-{BEST:04d} replay (seed {seed})](#/experiments/{study.summary.experiment_id}/runs/{run_id})" \
            in text
    assert set(trial.data.tags["dhns.replays"].split(",")) == set(by_id)
    assert first.data.metrics["test_mrr"] == pytest.approx(0.25 + cfg.seed % 7 / 100)
    assert list(first.data.params)[:2] == ["train.lr", "model.scorer"]
    assert first.inputs.dataset_inputs[0].dataset.digest == runs[BEST].inputs.dataset_inputs[0].dataset.digest
    total = by_id[tracked.summary_run_id]
    assert total.data.metrics["objective"] == pytest.approx(summary.mean[f"valid/{cfg.train.metric}"])
    assert "2 seeds" in total.data.tags["mlflow.note.content"] and total.info.status == "FINISHED"


def test_a_trial_configuration_trained_on_another_seed_is_not_a_replay(study, runs, client, tmp_path, monkeypatch):
    """A preset made from a trial (its provenance kept) trains seeds of its own: no verdict against the trial's
    value, not named or nested as a replay."""
    import dhns_search.training.runs as runs_mod

    monkeypatch.setattr(runs_mod, "train", fake_seed_train)
    loaded, _ = open_study(study.name, study.storage)
    [(_, cfg)] = export_trials(loaded, out=tmp_path / "best.yaml")
    assert cfg.provenance["seed"] == cfg.seed and runs_mod.is_replay(cfg)
    derived = cfg.model_copy(update={"seed": cfg.seed + 1})
    assert not runs_mod.is_replay(derived)
    summary, tracked = train_tracked(derived, name="derived", seeds=1, tracking_uri=study.tracking)
    assert summary.reproduction is None and tracked.replay_of is None
    [run] = [client.get_run(i) for i in tracked.run_ids]
    assert run.data.tags["dhns.role"] == "train" and "dhns.reproduction" not in run.data.tags
    assert run.info.run_name == f"train (seed {derived.seed})"


def test_the_leaderboard_description_fits_an_mlflow_tag(study):
    from dhns_search.search.publish import study_description

    loaded, _ = open_study(study.name, study.storage)
    full = study_description(loaded)
    assert "Best 2 of 2 completed trials:" in full
    short = study_description(loaded, limit=len(full) - 1)  # one row less fits
    assert len(short) < len(full) and "Best 1 of 2 completed trials (all of them: leaderboard.csv):" in short
    assert len(study_description(loaded, limit=120)) <= 120
