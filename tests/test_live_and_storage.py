"""What ``run`` shows while a trial runs (its epoch and last validation value), the default storage file
holding every study (earlier per-study files still read and continued), readable plots, and ``train``
logging to MLflow from the command line."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from pathlib import Path
from types import SimpleNamespace

import matplotlib.image as mpimg
import optuna
import pytest
from fake_training import write_space
from mlflow_study import SPACE, WARM, fake_seed_train, fake_train
from rich.console import Console
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.cli.live import LiveTable
from dhns_search.search.objectives import parse_objectives
from dhns_search.search.options import RunOptions
from dhns_search.search.plots import write_plots
from dhns_search.search.runner import run_study
from dhns_search.search.storage import known_studies, open_study

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(folder: Path, name: str = "live") -> Path:
    return write_space(folder, f"{name}.yaml", SPACE, WARM[:1], f"{name}-warm")


def test_the_live_table_shows_a_running_trial_with_its_epoch_of_the_total_its_last_value_and_eta(monkeypatch):
    from dhns_search.cli import live

    now = [100.0]
    monkeypatch.setattr(live, "time", SimpleNamespace(monotonic=lambda: now[0]))
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.suggest_float("train.lr", 0.001, 0.1, log=True)
    run = SimpleNamespace(name="s", study=study, objectives=parse_objectives(None, "mrr_realistic_filtered"),
                          space=SimpleNamespace(names=["train.lr"]))
    console = Console(record=True, width=160, force_terminal=False)
    table = LiveTable(console)
    with table.watch(run):
        table.trial_progress(trial.number, 1, None, 40)  # epoch 1 of 40 ended at t=100: no value, no pace yet
        now[0] = 110.0
        table.trial_progress(trial.number, 2, None, 40)  # epoch 2 ended: 10 s an epoch
        table.trial_progress(trial.number, 2, 0.1234, 40)  # its evaluation: 38 epochs to go, 380 s
        now[0] = 120.0
        table.trial_progress(trial.number, 3, None, 40)  # the next epoch keeps the last value
        now[0] = 125.0
        shown = Console(record=True, width=160)
        shown.print(table.render())
        text = shown.export_text()
        assert "running" in text and "0.1234 (epoch 3/40)" in text and "lr=" in text
        assert "25s, ETA 6m10s" in text  # 37 epochs to go at 10 s each
        study.tell(trial, 0.2)
        table(study, study.trials[0])
        shown = Console(record=True, width=160)
        shown.print(table.render())
        text = shown.export_text()
        assert "running" not in text and "complete" in text
    # off a terminal (logs, CI): one line per evaluation of a running trial
    assert console.export_text().splitlines()[0] == "trial 0: running, epoch 2/40, value 0.1234, ETA 6m20s"


def test_a_run_reports_every_evaluation_of_the_running_trial(tmp_path):
    console = Console(record=True, width=200, force_terminal=False)
    run_study(RunOptions(space=_space(tmp_path), storage=f"sqlite:///{tmp_path / 's.db'}", tracking_uri="none",
                         n_trials=1, enqueue=[str(tmp_path / "live-warm0.yaml")]),
              trainer=fake_train, monitor=LiveTable(console))
    lines = console.export_text().splitlines()
    for e, line in zip((1, 2, 3), lines[:3]):  # the epoch of the trial's 3, then the ETA (from epoch 2 on)
        assert line.startswith(f"trial 0: running, epoch {e}/3, value {0.02 * 10 * e / 3:.4f}"), line
        assert ("ETA" in line) == (e > 1), line
    assert lines[3].startswith("trial 0: complete")


def test_studies_share_one_file_and_an_earlier_per_study_file_is_continued(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path)
    # a study made by an earlier version, in its own file
    run_study(RunOptions(space=space, study="old", storage="sqlite:///studies/old.db", tracking_uri="none",
                         n_trials=1), trainer=fake_train)
    for name in ("old", "new", "newer"):  # old: continued to its budget of 2
        run_study(RunOptions(space=space, study=name, tracking_uri="none", n_trials=2 if name == "old" else 1),
                  trainer=fake_train)
    assert sorted(p.name for p in (tmp_path / "studies").glob("*.db")) == ["old.db", "studies.db"]
    assert sorted(known_studies(None)) == [("new", "sqlite:///studies/studies.db"),
                                           ("newer", "sqlite:///studies/studies.db"),
                                           ("old", "sqlite:///studies/old.db")]
    old, url = open_study("old")
    assert url == "sqlite:///studies/old.db" and len(old.trials) == 2  # continued where it was


def test_plots_are_named_after_the_objective_and_roomy(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="plots")
    study.set_user_attr("dhns.metric", "mrr_realistic_filtered")
    for i in range(6):
        trial = study.ask()
        values = [trial.suggest_float(f"section.param_{k}", 0.0, 1.0) for k in range(8)]
        trial.report(sum(values), step=1)
        study.tell(trial, sum(values))
    result = write_plots(study, tmp_path)
    names = sorted(p.name for p in result.files)
    assert names == sorted([*(f"{n}.png" for n in ("intermediate_values", "optimization_history",
                                                  "param_importances", "parallel_coordinate")),
                            "interactive.html"]), result.skipped
    html = (tmp_path / "interactive.html").read_text()
    assert "valid mrr (realistic)" in html and "Objective Value" not in html
    # every interactive plot on the one page, plotly.js in it once (offline: no CDN)
    for name in ("optimization_history", "intermediate_values", "param_importances", "parallel_coordinate"):
        assert f'<section id="{name}">' in html and f'href="#{name}"' in html, name
    assert html.count("Plotly.newPlot") == 4 and html.count("plotly.js v") == 1, html.count("plotly.js v")
    assert "<script src=" not in html  # no script from elsewhere
    width = mpimg.imread(tmp_path / "parallel_coordinate.png").shape[1]
    assert width >= 1.4 * 9 * 100  # 1.4 inches per axis at 100 dpi


def test_train_logs_an_export_next_to_its_trial_from_the_command_line(tmp_path, monkeypatch):
    import dhns_search.training.runs as runs_mod
    from dhns_search.search.export import export_trials

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs_mod, "train", fake_seed_train)
    tracking = "sqlite:///mlruns/mlflow.db"
    summary = run_study(RunOptions(space=_space(tmp_path), study="cli", tracking_uri=tracking, n_trials=1,
                                   enqueue=[str(tmp_path / "live-warm0.yaml")]), trainer=fake_train)
    study, _ = open_study("cli")
    export_trials(study, out=tmp_path / "best.yaml")
    res = CliRunner().invoke(app, ["train", "--config", "best.yaml", "--out", "run"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "mlflow: experiment 'cli', 1 run(s), linked to the trial's run" in text
    assert study.trials[0].user_attrs["mlflow_run_id"] in text
    off = CliRunner().invoke(app, ["train", "--config", "best.yaml", "--out", "run2", "--tracking-uri", "none"])
    assert off.exit_code == 0 and "mlflow:" not in off.output
    assert summary.experiment_id is not None
