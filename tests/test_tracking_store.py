"""The tracking store is checked before anything is written: bad stores are refused with one message and
exit code 2, nothing created; workers that start together on a new SQLite store do not race its
migrations; a study runs through a real ``mlflow server``."""

from __future__ import annotations

import multiprocessing
import textwrap
from pathlib import Path

import pytest
from fake_training import fake_run
from mlflow.tracking import MlflowClient
from services import free_port, mlflow_server
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.errors import TrackingError
from dhns_search.search.options import RunOptions
from dhns_search.search.runner import run_study
from dhns_search.tracking.store import open_store

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
runner = CliRunner()

SPACE = """
    fixed: {data.synth.num_entities: 30, data.synth.num_triples: 200, train.epochs: 2, train.eval_every: 1}
    params:
      train.lr: {type: float, low: 0.001, high: 0.1, log: true}
"""


def fake_train(cfg, *, dataset=None, callbacks=(), run_dir=None):
    return fake_run(cfg, callbacks, value=lambda e: cfg.train.lr * e, stats=lambda e: {"epoch_seconds": 0.01},
                    fingerprint="fake")


def _space(folder: Path) -> Path:
    path = folder / "store.yaml"
    path.write_text(textwrap.dedent(SPACE), encoding="utf-8")
    return path


@pytest.mark.parametrize(("uri", "message"), [
    ("ftp://example.org/mlflow", "unsupported scheme 'ftp'"),
    ("mlruns", "unsupported scheme '(none)'"),
    ("sqlite:///{tmp}/a-file/mlflow.db", "cannot create"),
    ("sqlite:///{tmp}/songs.db", "not an MLflow store (its tables: songs)"),
    ("sqlite:///{tmp}/text.db", "is not a SQLite database"),
    ("http://127.0.0.1:{port}", "does not answer"),
], ids=["scheme", "no-scheme", "unwritable-folder", "foreign", "not-sqlite", "dead-server"])
def test_a_bad_tracking_store_is_refused_before_anything_is_written(tmp_path, monkeypatch, uri, message):
    import sqlite3

    (tmp_path / "a-file").write_text("x")
    (tmp_path / "text.db").write_text("hello")
    with sqlite3.connect(tmp_path / "songs.db") as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    uri = uri.format(tmp=tmp_path, port=free_port())
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["run", "--space", str(_space(tmp_path)), "--tracking-uri", uri, "-n", "1",
                                 "--no-live"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.count("error:") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "store.yaml"])  # no studies/, no store


def _open(uri: str) -> None:
    open_store(uri)
    MlflowClient(uri).create_experiment(f"exp-{multiprocessing.current_process().pid}")


def test_workers_started_together_create_a_new_sqlite_store_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open, args=(uri,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert len(names - {"Default"}) == 3


def test_open_store_refuses_with_a_tracking_error(tmp_path):
    with pytest.raises(TrackingError, match="unsupported scheme 'file'"):
        open_store(f"file://{tmp_path}")


def test_a_study_runs_through_an_mlflow_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with mlflow_server(tmp_path) as url:
        summary = run_study(RunOptions(space=_space(tmp_path), study="served", tracking_uri=url, n_trials=2,
                                       sampler="random", pruner="none"), trainer=fake_train)
        client = MlflowClient(url)
        runs = client.search_runs([summary.experiment_id])
        roles = sorted(r.data.tags["dhns.role"] for r in runs)
        assert roles == ["parent", "trial", "trial"]
        assert {r.info.status for r in runs} == {"FINISHED"}
        parent = next(r for r in runs if r.data.tags["dhns.role"] == "parent")
        assert "leaderboard.csv" in [a.path for a in client.list_artifacts(parent.info.run_id)]


def test_a_server_that_dies_mid_study_stops_it_with_one_message_and_the_next_run_continues(tmp_path, monkeypatch):
    """The server dies during trial 1: one message, exit code 2, the study consistent (trial 1 failed and
    queued again, nothing RUNNING); with the server back, the same command finishes the study."""
    import os
    import signal

    import optuna
    from services import SERVERS

    from dhns_search.search.storage import make_storage

    monkeypatch.chdir(tmp_path)
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    calls = []

    def dying_train(cfg, *, dataset=None, callbacks=(), run_dir=None):
        calls.append(cfg.train.lr)
        if len(calls) == 2:  # the server goes away in the middle of trial 1
            os.killpg(SERVERS[url].pid, signal.SIGKILL)
            SERVERS[url].wait()
        return fake_train(cfg, dataset=dataset, callbacks=callbacks, run_dir=run_dir)

    args = ["run", "--space", str(_space(tmp_path)), "--study", "dies", "-n", "3", "--sampler", "random",
            "--pruner", "none", "--storage", storage, "--no-live"]
    monkeypatch.setattr("dhns_search.search.trial.train", dying_train)
    with mlflow_server(tmp_path, backend) as url:
        result = runner.invoke(app, [*args, "--tracking-uri", url])
    assert result.exit_code == 2, result.output
    assert f"error: the tracking store {url} failed (MlflowException" in " ".join(result.output.split())
    assert "during trial 1. The study is consistent" in result.output and "Traceback" not in result.output
    study = optuna.load_study(study_name="dies", storage=make_storage(storage))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                                               optuna.trial.TrialState.WAITING]

    with mlflow_server(tmp_path, backend) as url:  # the store is back (another port, the same backend)
        result = runner.invoke(app, [*args, "--tracking-uri", url])
        assert result.exit_code == 0, result.output
        study = optuna.load_study(study_name="dies", storage=make_storage(storage))
        states = [t.state.name for t in study.trials]
        assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("dies").experiment_id])
        assert not [r for r in runs if r.info.status == "RUNNING"]
        assert next(r for r in runs if r.data.tags["dhns.role"] == "parent").info.status == "FINISHED"


AUTOFLUSH = ("(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block if this "
             "flush is occurring prematurely)\n(sqlite3.OperationalError) database or disk is full\n"
             "[SQL: INSERT INTO latest_metrics (key, value) VALUES (?, ?)]\n[parameters: ('train_loss', 0.5)]\n"
             "(Background on this error at: https://sqlalche.me/e/20/e3q8)")


def test_a_failing_store_is_one_message_naming_it_and_the_cause_with_the_details_in_a_log(tmp_path, monkeypatch):
    """A SQLite store whose disk fills up in the middle of trial 1: its inserts fail (MLflow logs each with a
    traceback, and its error reads "Query-invoked autoflush"), its updates still pass.  One message names
    the store and the cause; the tracebacks go to the log; the trial's run and the parent are ended, not
    left RUNNING; the same command finishes the study once the store takes writes again."""
    import logging

    import optuna
    from mlflow.exceptions import MlflowException

    from dhns_search.search.storage import make_storage

    monkeypatch.chdir(tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    full = {"on": False, "trials": 0}
    real_log_batch = MlflowClient.log_batch

    def log_batch(self, *args, **kwargs):
        if full["on"]:
            try:  # what MLflow's SQLAlchemy store does: log the error with its traceback, then raise
                raise MlflowException(AUTOFLUSH)
            except MlflowException:
                logging.getLogger("mlflow.store.db.utils").exception("SQLAlchemy database error. The following "
                                                                     "exception is caught.")
                raise
        return real_log_batch(self, *args, **kwargs)

    def filling_train(cfg, *, dataset=None, callbacks=(), run_dir=None):
        full["trials"] += 1
        full["on"] = full["trials"] == 2  # the disk fills up during trial 1
        return fake_train(cfg, dataset=dataset, callbacks=callbacks, run_dir=run_dir)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    monkeypatch.setattr("dhns_search.search.trial.train", filling_train)
    args = ["run", "--space", str(_space(tmp_path)), "--study", "full", "-n", "3", "--sampler", "random",
            "--pruner", "none", "--no-live", "--tracking-uri", tracking]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert result.output.count("error:") == 1 and "Traceback" not in result.output, result.output
    assert "Query-invoked autoflush" not in result.output and "[SQL:" not in result.output
    assert (f"error: the tracking store {tracking} failed (MlflowException: (sqlite3.OperationalError) database or "
            "disk is full) during trial 1. The study is consistent") in text
    log = tmp_path / "studies" / "work" / "logs" / "full.log"
    assert f"(details: {log.relative_to(tmp_path)})" in text
    assert "Traceback" in log.read_text() and "Query-invoked autoflush" in log.read_text()
    assert "ExperimentalWarning" not in result.output  # RetryHeartbeatStaleTrialCallback's, on every run before

    study = optuna.load_study(study_name="full", storage=make_storage("sqlite:///studies/studies.db"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert study.trials[1].user_attrs["fail_reason"] == ("the tracking store failed (MlflowException: "
                                                         "(sqlite3.OperationalError) database or disk is full)")
    client = MlflowClient(tracking)
    runs = {r.data.tags.get("dhns.trial_number", "parent"): r.info.status
            for r in client.search_runs([client.get_experiment_by_name("full").experiment_id])}
    assert runs == {"0": "FINISHED", "1": "KILLED", "parent": "FAILED"}  # nothing left RUNNING

    full.update(on=False, trials=-10)  # space again
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="full", storage=make_storage("sqlite:///studies/studies.db"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    assert next(r for r in runs if r.data.tags["dhns.role"] == "parent").info.status == "FINISHED"


def test_train_logging_to_a_failing_store_is_one_message(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    def log_batch(self, *args, **kwargs):
        raise MlflowException(AUTOFLUSH)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    fast = ["data.synth.num_entities=30", "data.synth.num_triples=200", "model.dim=8", "negatives.num=4",
            "dhns.steps=10", "train.epochs=1", "train.eval_every=1", "train.progress=false"]
    result = runner.invoke(app, ["train", "--preset", "dhns-distmult", *[a for o in fast for a in ("--set", o)],
                                 "--out", "run", "--tracking-uri", tracking])
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert (f"the tracking store {tracking} failed (MlflowException: (sqlite3.OperationalError) database or disk "
            "is full); the run folder run holds what was trained") in text
    assert (tmp_path / "run" / "result.json").is_file()
