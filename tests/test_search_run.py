"""Running studies: outcomes of trials (complete, pruned, failed), MLflow structure, continuing a study,
status / export / ui / spaces commands, and an end-to-end study with the real trainer on spaces/smoke.yaml."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
from fake_training import fake_run, write_space
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from services import require_postgres
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.config import load_config, read_preset
from dhns_search.errors import ConfigError, DataError, StudyError, TrainingError
from dhns_search.search import runner as runner_mod
from dhns_search.search import trial_data
from dhns_search.search.export import export_best
from dhns_search.search.options import RunOptions
from dhns_search.search.runner import run_study
from dhns_search.search.seeds import trial_seed
from dhns_search.search.storage import open_study
from dhns_search.search.trial import is_trial_failure
from dhns_search.tracking import ui as ui_server

# MLflow 3.17 on SQLAlchemy 2.1 warns about its own ORM options; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
SPACES = Path(__file__).resolve().parents[1] / "spaces"
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    """One SQLite tracking store shared by the tests of this module (its tables take seconds to make)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


# -------------------------------------------------------------------------------- a fake trainer
def fake_train(cfg, *, dataset=None, callbacks=(), run_dir=None):
    """Deterministic stand-in for :func:`dhns_search.training.train` (same callback protocol)."""
    if cfg.model.scorer == "transe" and cfg.model.gamma > 7:
        raise TrainingError("the KGC loss is nan at epoch 1, batch 0")
    if cfg.model.scorer == "transe" and cfg.model.gamma < 4:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if cfg.train.lr == 0.0123:
        raise KeyError("a bug")
    return fake_run(cfg, callbacks, value=lambda epoch: cfg.train.lr * 10 * epoch / cfg.train.epochs,
                    stats=lambda epoch: {"diffusion_loss": 0.5 / epoch, "epoch_seconds": 0.01},
                    fingerprint="fake-fingerprint")


class PruneRotateFromStep2(optuna.pruners.BasePruner):
    """Deterministic pruner: prunes trials with the rotate scorer once they reported epoch 2."""

    def prune(self, study, trial) -> bool:
        return trial.params.get("model.scorer") == "rotate" and (trial.last_step or 0) >= 2


SPACE = """
    description: outcome test
    fixed:
      data.synth.num_entities: 30
      data.synth.num_triples: 200
      train.epochs: 3
      train.eval_every: 1
    params:
      model.scorer: {type: categorical, choices: [distmult, transe, rotate, complex]}
      model.gamma: {type: float, low: 2.0, high: 10.0, when: {model.scorer: [transe, rotate]}}
      train.lr: {type: float, low: 0.001, high: 0.1, log: true}
      dhns.levels: {type: categorical, choices: ["0,0.1,0.125,0.25,0.5", "0,0.5"]}
"""

ENQUEUED = [
    {"model.scorer": "distmult", "train.lr": 0.02, "dhns.levels": "0,0.1,0.125,0.25,0.5"},  # complete
    {"model.scorer": "rotate", "model.gamma": 5.0, "train.lr": 0.01, "dhns.levels": "0,0.1,0.125,0.25,0.5"},  # pruned
    {"model.scorer": "transe", "model.gamma": 9.0, "train.lr": 0.01, "dhns.levels": "0,0.1,0.125,0.25,0.5"},  # nan
    {"model.scorer": "distmult", "train.lr": 0.01, "dhns.levels": "0,0.5"},  # bad combination
    {"model.scorer": "transe", "model.gamma": 3.0, "train.lr": 0.01, "dhns.levels": "0,0.1,0.125,0.25,0.5"},  # OOM
    {"model.scorer": "distmult", "train.lr": 0.05, "dhns.levels": "0,0.1,0.125,0.25,0.5"},  # complete, best
]


@pytest.fixture
def outcome_space(tmp_path: Path) -> Path:
    return write_space(tmp_path, "outcomes.yaml", SPACE, ENQUEUED, "warm")


def options_for(tmp_path: Path, space: Path, tracking: str, **kw) -> RunOptions:
    base = {"space": space, "storage": f"sqlite:///{tmp_path / 'studies' / 'outcomes.db'}",
            "tracking_uri": tracking, "sampler": "random"}
    base.update(kw)
    return RunOptions(**base)


def test_trial_outcomes_are_recorded_and_the_study_goes_on(tmp_path, outcome_space, tracking, monkeypatch):
    monkeypatch.setattr(runner_mod, "make_pruner", lambda *_: PruneRotateFromStep2())
    warm = [str(tmp_path / f"warm{i}.yaml") for i in range(len(ENQUEUED))]
    summary = run_study(options_for(tmp_path, outcome_space, tracking, n_trials=6, enqueue=warm),
                        trainer=fake_train)

    assert summary.study == "outcomes" and summary.new_trials == [0, 1, 2, 3, 4, 5]
    assert summary.states["COMPLETE"] == 2 and summary.states["PRUNED"] == 1 and summary.states["FAIL"] == 3
    assert summary.best_trial == 5 and summary.best_value == pytest.approx(0.5)

    study, _ = open_study("outcomes", f"sqlite:///{tmp_path / 'studies' / 'outcomes.db'}")
    t = study.trials
    assert [x.state for x in t] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL,
                                    TrialState.FAIL, TrialState.COMPLETE]
    assert t[0].user_attrs["best_epoch"] == 3 and t[0].user_attrs["seed"] == trial_seed(0, 0)
    assert trial_data.read(t[0], "config")["train"]["test"] is False  # the test split is never used in a search
    assert trial_data.read(t[0], "params")["dhns.levels"] == [0.0, 0.1, 0.125, 0.25, 0.5]  # decoded
    assert t[0].user_attrs["dataset_fingerprint"] == "fake-fingerprint"
    assert t[1].intermediate_values == {1: 0.1 / 3, 2: 0.2 / 3} and t[1].user_attrs["pruned_at"] == 2
    assert t[2].user_attrs["fail_reason"] == "TrainingError: the KGC loss is nan at epoch 1, batch 0"
    assert t[3].user_attrs["fail_reason"].startswith("ConfigError:")
    assert "level_weights has 5 entries but levels has 2" in t[3].user_attrs["fail_reason"]
    assert "out of memory" in t[4].user_attrs["fail_reason"]

    # MLflow: one parent, one child per trial, statuses and keys as the trials say
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("outcomes")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("dhns.role") == "parent"]
    assert len(parents) == 1 and parents[0].info.run_id == summary.parent_run_id
    assert parents[0].info.status == "FINISHED"
    children = {int(r.data.tags["dhns.trial_number"]): r for r in runs if r.data.tags.get("dhns.role") == "trial"}
    assert sorted(children) == list(range(6)) and len(runs) == 7
    assert all(c.data.tags["mlflow.parentRunId"] == summary.parent_run_id for c in children.values())
    assert [children[n].info.status for n in range(6)] == ["FINISHED", "FINISHED", "FAILED", "FAILED", "FAILED",
                                                          "FINISHED"]  # pruned: FINISHED, tag dhns.state
    assert children[3].data.tags["dhns.fail_reason"].startswith("ConfigError:")
    # the same configuration keys, even for trial 3; the searched ones by their names in the space
    assert len({frozenset(k for k in c.data.params if k.startswith("zconfig.")) for c in children.values()}) == 1
    assert all(set(c.data.params) - {"model.scorer", "model.gamma", "train.lr", "dhns.levels"} ==
               {k for k in c.data.params if k.startswith("zconfig.")} for c in children.values())
    assert children[0].data.params["zconfig.train.test"] == "false"
    assert t[0].user_attrs["mlflow_run_id"] == children[0].info.run_id
    history = client.get_metric_history(children[0].info.run_id, "valid_mrr")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(children[0].info.run_id, "train_loss")] == [1, 2, 3]
    top = {a.path for a in client.list_artifacts(summary.parent_run_id)}
    assert {"outcomes.yaml", "leaderboard.csv", "leaderboard.md", "best_config.yaml", "plots"} <= top
    plots = {a.path for a in client.list_artifacts(summary.parent_run_id, "plots")}
    assert {f"plots/{name}.png" for name in ("optimization_history", "intermediate_values", "param_importances",
                                             "parallel_coordinate")} | {"plots/interactive.html"} == plots
    best_cfg = client.download_artifacts(summary.parent_run_id, "best_config.yaml", str(tmp_path))
    assert load_config(best_cfg).provenance["trial"] == 5

    # continuing: --n-trials is the study's budget, already met; a larger one runs the difference, the trial
    # numbers go on and the parent is reused
    same = run_study(options_for(tmp_path, outcome_space, tracking, n_trials=6), trainer=fake_train)
    assert same.new_trials == [] and same.n_trials == 6 and same.stopped == "budget met"
    again = run_study(options_for(tmp_path, outcome_space, tracking, n_trials=8), trainer=fake_train)
    assert again.new_trials == [6, 7] and again.n_trials == 8
    assert again.parent_run_id == summary.parent_run_id
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 9 and client.get_run(summary.parent_run_id).info.status == "FINISHED"


def test_a_bug_stops_the_study_but_every_run_is_ended(tmp_path, outcome_space, tracking):
    warm = tmp_path / "bug.yaml"
    warm.write_text("model.scorer: distmult\ntrain.lr: 0.0123\ndhns.levels: \"0,0.1,0.125,0.25,0.5\"\n", encoding="utf-8")
    opts = options_for(tmp_path, outcome_space, tracking, study="buggy", n_trials=3, enqueue=[str(warm)])
    with pytest.raises(KeyError, match="a bug"):
        run_study(opts, trainer=fake_train)
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("buggy").experiment_id])
    status = {r.data.tags["dhns.role"]: r.info.status for r in runs}
    assert len(runs) == 2 and status == {"parent": "FAILED", "trial": "FAILED"}
    study, _ = open_study("buggy", opts.storage)
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["fail_reason"] == "KeyError: 'a bug'"


def _cpu_out_of_memory() -> RuntimeError:
    """What the CPU allocator raises when it cannot allocate (2**62 bytes exceeds any address space)."""
    try:
        torch.empty(2**62, dtype=torch.uint8)
    except RuntimeError as err:
        return err
    raise AssertionError("allocating 2**62 bytes succeeded")


@pytest.mark.parametrize(("make", "fails_the_trial_only"), [
    (lambda: ConfigError("level_weights has 5 entries but levels has 2"), True),
    (lambda: TrainingError("the KGC loss is nan at epoch 1, batch 0"), True),
    (lambda: DataError("no such file"), True),
    (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (_cpu_out_of_memory, True),
    (lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x16 and 32x16)"), False),
    (lambda: RuntimeError("CUDA out of memory"), False),  # torch >= 2.1 raises OutOfMemoryError for that
    (lambda: NotImplementedError("DefaultCPUAllocator: can't allocate memory"), False),
    (lambda: FloatingPointError("overflow"), False),
    (lambda: MemoryError(), False),
    (lambda: KeyError("a bug"), False),
])
def test_only_this_projects_errors_and_out_of_memory_fail_just_the_trial(make, fails_the_trial_only):
    assert is_trial_failure(make()) is fails_the_trial_only


def test_running_out_of_cpu_memory_fails_the_trial_and_the_study_goes_on(tmp_path, outcome_space):
    def allocate_too_much(cfg, **kw):
        torch.empty(2**62, dtype=torch.uint8)

    opts = options_for(tmp_path, outcome_space, "none", study="oom", n_trials=2)
    summary = run_study(opts, trainer=allocate_too_much)
    assert summary.new_trials == [0, 1] and summary.states["FAIL"] == 2
    study, _ = open_study("oom", opts.storage)
    assert all("DefaultCPUAllocator: can't allocate memory" in t.user_attrs["fail_reason"] for t in study.trials)


def test_a_runtime_error_in_the_trainer_is_a_bug_and_stops_the_study(tmp_path, outcome_space, tracking):
    def shape_bug(cfg, **kw):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x16 and 32x16)")

    opts = options_for(tmp_path, outcome_space, tracking, study="shapes", n_trials=3)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_study(opts, trainer=shape_bug)
    study, _ = open_study("shapes", opts.storage)
    assert len(study.trials) == 1 and study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["fail_reason"].startswith("RuntimeError: mat1 and mat2 shapes")
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("shapes").experiment_id])
    assert {r.data.tags["dhns.role"]: r.info.status for r in runs} == {"parent": "FAILED", "trial": "FAILED"}


def test_seed_is_fixed_when_the_study_is_created(tmp_path, outcome_space):
    opts = options_for(tmp_path, outcome_space, "none", study="seeded", n_trials=1, seed=7)
    run_study(opts, trainer=fake_train)
    with pytest.raises(StudyError, match="created with --seed 7"):
        run_study(options_for(tmp_path, outcome_space, "none", study="seeded", n_trials=1, seed=8),
                  trainer=fake_train)
    summary = run_study(options_for(tmp_path, outcome_space, "none", study="seeded", n_trials=2),
                        trainer=fake_train)
    assert summary.seed == 7 and summary.parent_run_id is None  # MLflow off with tracking "none"
    study, _ = open_study("seeded", opts.storage)
    assert [t.user_attrs["seed"] for t in study.trials] == [trial_seed(7, 0), trial_seed(7, 1)]


def test_everything_is_validated_before_a_study_exists(tmp_path, outcome_space):
    storage = tmp_path / "studies" / "outcomes.db"
    bad_warm = tmp_path / "bad.yaml"
    bad_warm.write_text("model.scorer: transh\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'transh' is not one of the choices"):
        run_study(options_for(tmp_path, outcome_space, "none", enqueue=[str(bad_warm)]), trainer=fake_train)
    with pytest.raises(ConfigError, match="unknown sampler"):
        run_study(options_for(tmp_path, outcome_space, "none", sampler="bohb"), trainer=fake_train)
    with pytest.raises(ConfigError, match="unknown pruner"):
        run_study(options_for(tmp_path, outcome_space, "none", pruner="asha"), trainer=fake_train)
    with pytest.raises(ConfigError, match="is searched by parameter"):
        run_study(options_for(tmp_path, outcome_space, "none", overrides=["train.lr=0.1"]), trainer=fake_train)
    assert not storage.exists()


def test_enqueue_a_preset_config(tmp_path, outcome_space):
    opts = options_for(tmp_path, outcome_space, "none", study="warm", n_trials=1,
                       enqueue=["preset:dhns-rotate"])
    run_study(opts, trainer=fake_train)
    study, _ = open_study("warm", opts.storage)
    trial = study.trials[0]
    preset = read_preset("dhns-rotate")
    assert trial.params["model.scorer"] == "rotate" and trial.params["model.gamma"] == preset["model"]["gamma"]
    assert trial.params["train.lr"] == preset["train"]["lr"]
    assert trial.user_attrs["enqueued_from"] == "preset:dhns-rotate"


@pytest.mark.parametrize("sampler", ["random", "gp", "qmc", "tpe"])
def test_samplers_run_on_a_conditional_space(tmp_path, outcome_space, sampler):
    opts = options_for(tmp_path, outcome_space, "none", study=f"s-{sampler}", n_trials=3, sampler=sampler)
    summary = run_study(opts, trainer=fake_train)
    assert len(summary.new_trials) == 3


# ------------------------------------------------------------------------------ CLI after a search
def test_status_export_and_errors_through_the_cli(tmp_path, outcome_space, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_study(RunOptions(space=outcome_space, study="cli", n_trials=2, tracking_uri="none",
                         enqueue=[str(tmp_path / "warm0.yaml"), str(tmp_path / "warm5.yaml")]), trainer=fake_train)
    assert (tmp_path / "studies" / "studies.db").is_file()  # the default storage: one file for every study

    listing = invoke("status")
    assert listing.exit_code == 0 and "cli" in listing.output and "sqlite:///studies/studies.db" in listing.output
    board = invoke("status", "cli")
    assert board.exit_code == 0 and "scorer=distmult" in board.output and "2 complete" in board.output

    missing_db = tmp_path / "elsewhere" / "none.db"
    res = runner.invoke(app, ["status", "nope", "--storage", f"sqlite:///{missing_db}"])
    assert res.exit_code == 2 and "no such database file" in res.output  # the storage named, not a study list
    assert not missing_db.exists() and not missing_db.parent.exists()  # reading creates no database

    unknown = runner.invoke(app, ["status", "nope"])
    assert unknown.exit_code == 2
    assert "no study 'nope'" in unknown.output and "known studies: cli (sqlite:///studies/studies.db)" in unknown.output

    out = invoke("export", "cli", "--out", "best.yaml")
    assert out.exit_code == 0, out.output
    cfg = load_config(tmp_path / "best.yaml")
    study, _ = open_study("cli")
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert cfg.train.epochs == best.user_attrs["best_epoch"] and cfg.train.test is True
    assert cfg.seed == best.user_attrs["seed"]
    assert cfg.provenance["study"] == "cli" and cfg.provenance["trial"] == best.number
    assert cfg.provenance["valid_value"] == best.value and cfg.provenance["valid_metric"] == "mrr_realistic_filtered"
    assert cfg.provenance["optuna_version"] == optuna.__version__
    assert cfg.provenance["dataset_fingerprint"] == "fake-fingerprint"

    two = invoke("export", "cli", "--top", "2")
    assert two.exit_code == 0
    assert len(list((tmp_path / "exports").glob("cli-trial*.yaml"))) == 2
    assert len(export_best("cli", top=2, out=tmp_path / "x" / "b.yaml")) == 2
    # a directory target (trailing slash, or an existing folder) keeps the default file names inside it
    into = invoke("export", "cli", "--top", "2", "--out", "best/")
    assert into.exit_code == 0, into.output
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == sorted(
        p.name for p in (tmp_path / "exports").glob("cli-trial*.yaml")
    )
    assert (tmp_path / "x" / "b-1.yaml").is_file() and (tmp_path / "x" / "b-2.yaml").is_file()


def test_spaces_commands(tmp_path):
    ok = invoke("spaces", "validate", SPACES / "dhns.yaml", SPACES / "smoke.yaml")
    assert ok.exit_code == 0 and ok.output.count("ok ") == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  train.lr: {type: float, low: 1.0e-4, high: 1.0e-1, scale: log}\n")
    res = runner.invoke(app, ["spaces", "validate", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}: params.train.lr: unknown key 'scale' (did you mean log: true?)" in " ".join(res.output.split())
    shown = invoke("spaces", "show", SPACES / "dhns.yaml")
    assert shown.exit_code == 0 and "hardness" in shown.output and "model.gamma" in shown.output


def test_ui_starts_mlflow_on_the_project_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    served = []
    monkeypatch.setattr(ui_server, "serve_ui", lambda uri, **kw: served.append((uri, kw)) or 0)
    res = invoke("ui", "--port", "5077", "--study", "abc")
    assert res.exit_code == 0
    uri, kw = served[0]
    assert uri == "sqlite:///mlruns/mlflow.db" and kw["port"] == 5077 and kw["study"] == "abc"
    assert kw["notes"] == ["Optuna dashboard (pip install optuna-dashboard): optuna-dashboard sqlite:///studies/studies.db"]
    with pytest.raises(StudyError, match="no MLflow tracking store"):
        ui_server.mlflow_ui_command("sqlite:///mlruns/mlflow.db", port=5077)
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(b"")
    cmd = ui_server.mlflow_ui_command("sqlite:///mlruns/mlflow.db", port=5077)
    assert cmd[2:] == ["mlflow", "ui", "--backend-store-uri", "sqlite:///mlruns/mlflow.db", "--host", "127.0.0.1",
                       "--port", "5077", "--workers", "1", "--app-name", "dhns-search", "--uvicorn-opts",
                       "--no-access-log"]


# ------------------------------------------------------------------------ end to end, real trainer
@pytest.mark.slow
def test_end_to_end_smoke_study_export_replays_exactly(tmp_path, monkeypatch):
    from dhns_search.training.loop import train

    monkeypatch.chdir(tmp_path)
    result = invoke("run", "--space", SPACES / "smoke.yaml", "--n-trials", "3", "--seed", "3", "--no-live")
    assert result.exit_code == 0, result.output
    assert "study smoke: 3 trials" in " ".join(result.output.split())

    study, url = open_study("smoke")
    assert url == "sqlite:///studies/studies.db"
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    client = MlflowClient("sqlite:///mlruns/mlflow.db")
    exp = client.get_experiment_by_name("smoke")
    assert exp.artifact_location == (tmp_path / "mlruns" / "artifacts" / "smoke").resolve().as_uri()
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4 and sum(r.data.tags.get("dhns.role") == "parent" for r in runs) == 1
    assert all(r.info.status == "FINISHED" for r in runs)
    child = next(r for r in runs if r.data.tags.get("dhns.trial_number") == "0")
    history = client.get_metric_history(child.info.run_id, "valid_mrr")
    assert [m.step for m in history] == [1, 2, 3]
    assert {"train_loss", "diffusion_loss", "epoch_seconds"} <= set(child.data.metrics)

    # export the best trial, train it through the library: the validation metric is reproduced exactly
    exported = invoke("export", "smoke", "--out", "best.yaml")
    assert exported.exit_code == 0, exported.output
    cfg = load_config("best.yaml")
    replay = train(cfg)
    assert replay.best_value == cfg.provenance["valid_value"] == study.best_value
    assert replay.best_epoch == cfg.train.epochs and replay.test is not None

    # running the same study again continues it (--n-trials: the study's budget)
    again = invoke("run", "--space", SPACES / "smoke.yaml", "--n-trials", "4", "--no-live")
    assert again.exit_code == 0, again.output
    study, _ = open_study("smoke")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert len(client.search_runs([exp.experiment_id])) == 5


# ---------------------------------------------------------------- several workers on PostgreSQL
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def slow_fake_train(cfg, **kw):
    time.sleep(1.0)  # long enough for the two workers' trials to interleave
    return fake_train(cfg, **kw)


def _worker(space: str, study: str, tracking: str, n: int) -> None:
    run_study(RunOptions(space=Path(space), study=study, storage=POSTGRES, tracking_uri=tracking, n_trials=n,
                         sampler="random", pruner="none"), trainer=slow_fake_train)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_share_a_study_on_postgres(tmp_path):
    require_postgres()  # fails when PostgreSQL is absent (see tests/services.py)
    import multiprocessing
    import uuid

    space = tmp_path / "two.yaml"
    space.write_text(textwrap.dedent("""
        fixed: {data.synth.num_entities: 30, data.synth.num_triples: 200, train.epochs: 2}
        params:
          train.lr: {type: float, low: 0.001, high: 0.1, log: true}
          model.scorer: {type: categorical, choices: [distmult, rotate]}
    """), encoding="utf-8")
    study = f"pg-{uuid.uuid4().hex[:8]}"
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    _worker(str(space), study, tracking, 1)  # creates the study, the experiment and the parent
    # a second process and this one work on the study at the same time, to its budget of 7 trials
    procs = [multiprocessing.get_context("spawn").Process(target=_worker, args=(str(space), study, tracking, 7))]
    try:
        procs[0].start()
        deadline = time.monotonic() + 120
        while len(open_study(study, POSTGRES)[0].trials) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # wait until the other process is in its first trial
        _worker(str(space), study, tracking, 7)
        procs[0].join(180)
        assert procs[0].exitcode == 0
        loaded, _ = open_study(study, POSTGRES)
        trials = loaded.trials
        assert sorted(t.number for t in trials) == list(range(7))
        assert all(t.state == TrialState.COMPLETE for t in trials)
        assert len({t.params["train.lr"] for t in trials}) == 7  # the workers did not propose the same trials
        client = MlflowClient(tracking)
        runs = client.search_runs([client.get_experiment_by_name(study).experiment_id])
        parents = [r for r in runs if r.data.tags["dhns.role"] == "parent"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        children = [r for r in runs if r.data.tags["dhns.role"] == "trial"]
        assert sorted(int(r.data.tags["dhns.trial_number"]) for r in children) == list(range(7))
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        optuna.delete_study(study_name=study, storage=POSTGRES)


# ------------------------------------------------------------------------------- benchmark spaces
BENCHMARK_SPACES = {"mkg-y": "MKG-Y", "mkg-w": "MKG-W", "db15k": "DB15K"}


@pytest.mark.benchmarks
@pytest.mark.parametrize("name", sorted(BENCHMARK_SPACES))
def test_benchmark_spaces_load_their_data_and_take_the_released_config(name, tmp_path, monkeypatch, benchmarks_dir):
    # data.path (../shared/benchmarks/...) is relative to the repository root, where a run starts
    monkeypatch.chdir(SPACES.parent)
    opts = RunOptions(space=Path("spaces") / f"{name}.yaml", storage=f"sqlite:///{tmp_path / 's.db'}",
                      tracking_uri="none", n_trials=1, enqueue=["preset:paper-distmult-mkgy"])
    summary = run_study(opts, trainer=fake_train)
    study, _ = open_study(name, opts.storage)
    trial = study.trials[0]
    assert summary.states["COMPLETE"] == 1
    assert trial.params["model.dim"] == 1024 and trial.params["hardness"] == "released"
    cfg = trial_data.read(trial, "config")
    assert cfg["data"]["path"] == f"../shared/benchmarks/{BENCHMARK_SPACES[name]}"
