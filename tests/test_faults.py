"""Studies that survive signals and dead workers, with real processes and the real trainer:

- Ctrl-C / SIGTERM / SIGHUP (a closed terminal) during ``run``: the trial stops at a batch boundary, checkpointed; Optuna records it
  FAIL ("interrupted") and queues it again; its MLflow run and the parent end KILLED; one line says how to
  continue, and that command resumes the trial from its checkpoint to the value an uninterrupted run gets;
- a second Ctrl-C still leaves both stores consistent;
- a worker killed with SIGKILL in the middle of a trial, on PostgreSQL with an MLflow server (itself on
  PostgreSQL, as in the README's multi-machine example): the other
  workers retry the trial from its checkpoint and the study ends with exactly its budget;
- ``run --workers 2`` on the default journal storage: the budget is met exactly, both workers ran trials;
- ``run --workers 3`` with one worker SIGKILLed: its trial is retried, the budget met exactly, exit code 0
  and a note; workers whose ``run`` dies stop checkpointed, and the same command finishes;
- no trial starts after a stop request.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from services import mlflow_server, require_postgres, scratch_postgres_database
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.config.models import RunConfig
from dhns_search.data import load_from_config
from dhns_search.search import trial_data
from dhns_search.search.recovery import budget_used
from dhns_search.search.storage import make_storage
from dhns_search.training import train

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _space(folder: Path, name: str = "faults") -> Path:
    """``spaces/smoke.yaml`` at 4 epochs with its two plain parameters (learning rate and scorer) only."""
    doc = yaml.safe_load((ROOT / "spaces" / "smoke.yaml").read_text(encoding="utf-8"))
    doc["description"] = "Fault tests; the real trainer on a 60-entity graph, 4 epochs."
    doc["fixed"]["train.epochs"] = 4
    doc["params"] = {key: doc["params"][key] for key in ("train.lr", "model.scorer")}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _start(folder: Path, args: list[str], *, pause_at: int | None = 2, hold: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tests" / "killable.py"), str(folder)]
    if pause_at is not None:
        cmd += ["--pause-at", str(pause_at)] + (["--hold"] if hold else [])
    return subprocess.Popen([*cmd, "--", *args], cwd=folder, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (code {proc.returncode}) before {path.name}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.05)


def _stores(folder: Path) -> list[str]:
    """Absolute store URLs (MLflow caches a store by its URI, so a relative one would follow the first
    test's working directory in this process)."""
    return ["--storage", f"sqlite:///{folder / 'studies' / 'studies.db'}",
            "--tracking-uri", f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"]


def _uninterrupted_value(trial: optuna.trial.FrozenTrial) -> float:
    """The best validation value of the trial's configuration and seed, trained in one go."""
    cfg = RunConfig.model_validate(trial_data.read(trial, "config"))
    return train(cfg, dataset=load_from_config(cfg.data)).best_value


def _runs(tracking: str, study: str) -> list:
    client = MlflowClient(tracking)
    return client.search_runs([client.get_experiment_by_name(study).experiment_id])


def _interrupted_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["sigint", "sigterm", "sighup"])
def test_a_signal_ends_the_trial_cleanly_and_the_printed_command_resumes_it(tmp_path, monkeypatch, sig):
    args = ["run", "--space", str(_space(tmp_path)), "--n-trials", "2", "--sampler", "random", "--pruner", "none",
            "--no-live", *_stores(tmp_path)]
    proc = _start(tmp_path, args)
    _wait_for(tmp_path / "paused", proc)  # trial 0 evaluated epoch 2 and checkpointed
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig and "Traceback" not in err
    line = _interrupted_line(err)
    assert line.startswith("interrupted; continue with: dhns-search run --study faults --space ")

    storage = f"sqlite:///{tmp_path / 'studies' / 'studies.db'}"
    study = optuna.load_study(study_name="faults", storage=make_storage(storage, create=False))
    dead, queued = study.trials
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "interrupted"
    assert dead.user_attrs["interrupted_at"] == "epoch 3, batch 0"  # the next batch boundary
    assert queued.state == TrialState.WAITING and queued.system_attrs["failed_trial"] == 0
    assert (Path(dead.system_attrs["dhns.run_dir"]) / "checkpoint.pt").is_file()
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    runs = {r.data.tags["dhns.role"]: r for r in _runs(tracking, "faults")}
    assert runs["parent"].info.status == "KILLED"
    assert runs["trial"].info.status == "KILLED" and runs["trial"].data.tags["dhns.fail_reason"] == "interrupted"

    monkeypatch.chdir(tmp_path)  # the printed command, as the user would type it
    result = runner.invoke(app, shlex.split(line.split("continue with: ", 1)[1])[1:])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="faults", storage=make_storage(storage, create=False))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert budget_used(study) == 2  # the interrupted trial counts once, through its retry
    retry = study.trials[1]
    assert retry.user_attrs["resumed_from_epoch"] == 2 and retry.user_attrs["retry_of"] == 0
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4]  # epochs 1-2 inherited, 3-4 reported
    assert retry.user_attrs["seed"] == dead.user_attrs["seed"]
    assert retry.value == _uninterrupted_value(retry)
    runs = _runs(tracking, "faults")
    assert {r.info.status for r in runs} == {"FINISHED", "KILLED"} and not [r for r in runs if r.info.status == "RUNNING"]
    killed = next(r for r in runs if r.data.tags.get("dhns.trial_number") == "0")
    assert killed.data.tags["dhns.retried_by"] == "1"
    assert next(r for r in runs if r.data.tags["dhns.role"] == "parent").info.status == "FINISHED"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_leaves_both_stores_consistent(tmp_path, monkeypatch):
    args = ["run", "--space", str(_space(tmp_path)), "--n-trials", "1", "--sampler", "random", "--pruner", "none",
            "--no-live", *_stores(tmp_path)]
    proc = _start(tmp_path, args, hold=True)
    _wait_for(tmp_path / "paused", proc)
    proc.send_signal(signal.SIGINT)
    _wait_for(tmp_path / "stopping", proc)  # the first request was seen; the trial does not get to stop
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err
    _interrupted_line(err)
    storage = f"sqlite:///{tmp_path / 'studies' / 'studies.db'}"
    study = optuna.load_study(study_name="faults", storage=make_storage(storage, create=False))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert {r.info.status for r in _runs(tracking, "faults")} == {"KILLED"}  # parent and trial run

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="faults", storage=make_storage(storage, create=False))
    assert study.trials[1].state == TrialState.COMPLETE and study.trials[1].user_attrs["resumed_from_epoch"] == 2


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_killed_mid_trial_is_retried_from_its_checkpoint_on_postgres_and_mlflow_server(tmp_path):
    pg = require_postgres()
    name = f"kill-{uuid.uuid4().hex[:8]}"
    space = _space(tmp_path)
    try:
        with scratch_postgres_database("mlflow") as backend, mlflow_server(tmp_path, backend) as server:
            first = _start(tmp_path, ["run", "--space", str(space), "--study", name, "--storage", pg,
                                      "--tracking-uri", server, "--n-trials", "5", "--sampler", "random",
                                      "--pruner", "none", "--no-live"])
            _wait_for(tmp_path / "paused", first)  # worker 1 is in the middle of trial 0, checkpointed at epoch 2
            first.kill()
            first.communicate()
            shown = runner.invoke(app, ["status", name, "--storage", pg])
            assert shown.exit_code == 0 and "budget: 1 of 5 trials" in shown.output
            assert "trial 0 is RUNNING but its worker (process" in shown.output
            joiners = [_start(tmp_path, ["worker", "--study", name, "--storage", pg, "--tracking-uri", server,
                                         "--no-live"], pause_at=None) for _ in range(2)]
            for p in joiners:
                _out, err = p.communicate(timeout=600)
                assert p.returncode == 0 and "Traceback" not in err, err
            study = optuna.load_study(study_name=name, storage=make_storage(pg))
            states = [t.state for t in study.trials]
            assert budget_used(study) == 5 and TrialState.RUNNING not in states and TrialState.WAITING not in states
            assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 5
            dead = study.trials[0]
            assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
            retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
            assert retry.user_attrs["resumed_from_epoch"] == 2 and retry.state == TrialState.COMPLETE
            assert retry.value == _uninterrupted_value(retry)
            workers = {t.system_attrs["dhns.worker"]["pid"] for t in study.trials}
            assert len(workers) == 3  # the killed worker and the two that joined
            runs = _runs(server, name)
            assert not [r for r in runs if r.info.status == "RUNNING"]
            parent = next(r for r in runs if r.data.tags["dhns.role"] == "parent")
            assert parent.info.status == "FINISHED"
            assert len([k for k in parent.data.tags if k.startswith("dhns.worker.")]) == 3
            killed = next(r for r in runs if r.data.tags.get("dhns.trial_number") == "0")
            assert killed.info.status in ("KILLED", "FAILED") and killed.data.tags["dhns.retried_by"] == str(retry.number)
            assert sorted(int(r.data.tags["dhns.trial_number"]) for r in runs if r.data.tags["dhns.role"] == "trial") \
                == [t.number for t in study.trials]
    finally:
        optuna.delete_study(study_name=name, storage=make_storage(pg))


@pytest.mark.slow
def test_two_worker_processes_meet_the_budget_exactly_on_the_default_journal(tmp_path):
    args = ["run", "--space", str(_space(tmp_path)), "--workers", "2", "--n-trials", "5", "--sampler", "random",
            "--pruner", "none", "--tracking-uri", "none"]
    done = subprocess.run([sys.executable, "-m", "dhns_search", *args], check=False, cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 workers (auto, auto; 1 thread(s) each)" in done.stderr + done.stdout
    study = optuna.load_study(study_name="faults", storage=make_storage("journal:" + str(tmp_path / "studies" /
                                                                                       "faults.journal")))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    assert len({t.system_attrs["dhns.worker"]["pid"] for t in study.trials}) == 2
    assert {t.user_attrs["device"] for t in study.trials} == {"cpu"}
    assert len({t.params["train.lr"] for t in study.trials}) == 5  # the workers' samplers differ


@pytest.mark.slow
def test_ctrl_c_while_the_workers_start_ends_them_quietly_and_the_same_command_finishes(tmp_path):
    """A stop request that reaches the workers while Python and torch are still importing (their handlers
    not in place) ends them quietly: no traceback, no abort from C++, no trial; then the budget is met."""
    journal = tmp_path / "w.journal"
    args = [sys.executable, "-m", "dhns_search", "run", "--space", str(_space(tmp_path)), "--workers", "2",
            "--n-trials", "2", "--sampler", "random", "--pruner", "none", "--tracking-uri", "none",
            "--storage", f"journal:{journal}", "--no-live"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:  # the parent prints this line, then starts the workers
        seen.append(line)
        if " workers (" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    out = "".join(seen) + out
    assert " workers (" in out, out + err
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err and "terminate called" not in err, err
    assert _interrupted_line(err).startswith("interrupted; continue with: dhns-search run --study faults"), err
    study = optuna.load_study(study_name="faults", storage=make_storage(f"journal:{journal}"))
    assert study.trials == []

    done = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="faults", storage=make_storage(f"journal:{journal}"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_ctrl_c_on_run_with_workers_stops_every_worker_cleanly_and_the_same_command_finishes(tmp_path):
    """The signal reaches the parent only (as ``kill -INT``): it passes it on; one line, exit 130, no
    trial left RUNNING; the same command then meets the budget exactly."""
    import optuna

    journal = tmp_path / "w.journal"
    args = [sys.executable, "-m", "dhns_search", "run", "--space", str(_space(tmp_path)), "--workers", "2",
            "--n-trials", "4", "--sampler", "random", "--pruner", "none", "--tracking-uri", "none",
            "--storage", f"journal:{journal}", "--set", "train.epochs=30"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("studies/work/faults-*/trial-000*/checkpoint.pt")):  # a trial is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err + out, err
    assert _interrupted_line(err).startswith("interrupted; continue with: dhns-search run --study faults")
    study = optuna.load_study(study_name="faults", storage=make_storage(f"journal:{journal}"))
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert interrupted and all(t.user_attrs["fail_reason"] == "interrupted" for t in interrupted)
    queued = sorted(t.system_attrs["failed_trial"] for t in study.trials if t.state == TrialState.WAITING)
    assert queued == [t.number for t in interrupted]

    done = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="faults", storage=make_storage(f"journal:{journal}"))
    assert budget_used(study) == 4 and {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.FAIL}
    assert [t for t in study.trials if t.system_attrs.get("failed_trial") is not None
            and t.state == TrialState.COMPLETE and t.user_attrs.get("resumed_from_epoch", 0) > 0]


# ----------------------------------------------------------------------------- lost workers and a lost run
def _worker_pids(study) -> set[int]:
    return {t.system_attrs["dhns.worker"]["pid"] for t in study.trials if "dhns.worker" in t.system_attrs}


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which nobody may reap in a container, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text(encoding="ascii")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _running_with_checkpoint(journal: Path, name: str, proc: subprocess.Popen) -> optuna.trial.FrozenTrial:
    """A trial in progress that has checkpointed at least once (its worker is mid-trial)."""
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        if journal.exists():
            study = optuna.load_study(study_name=name, storage=make_storage(f"journal:{journal}"))
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                if (Path(t.system_attrs.get("dhns.run_dir", "/nonexistent")) / "checkpoint.pt").is_file():
                    return t
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_run_with_three_workers_exits_0_after_the_exact_budget_when_one_worker_is_killed(tmp_path):
    journal = tmp_path / "w.journal"
    args = [sys.executable, "-m", "dhns_search", "run", "--space", str(_space(tmp_path)), "--workers", "3",
            "--n-trials", "4", "--sampler", "random", "--pruner", "none", "--tracking-uri", "none",
            "--storage", f"journal:{journal}", "--set", "train.epochs=12"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = _running_with_checkpoint(journal, "faults", proc)
    os.kill(victim.system_attrs["dhns.worker"]["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in out + err and "error:" not in err and "its message is above" not in out + err
    assert "was killed by SIGKILL; the study met its budget all the same" in " ".join((out + err).split())
    study = optuna.load_study(study_name="faults", storage=make_storage(f"journal:{journal}"))
    assert budget_used(study) == 4
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 1


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_whose_run_dies_stop_checkpointed_and_the_same_command_finishes(tmp_path):
    """The decision (docs/search.md): a worker of run --workers watches its run; when the run dies it stops
    as on SIGTERM (the trial ends at its next batch, checkpointed, queued again) and starts no other."""
    journal = tmp_path / "w.journal"
    args = [sys.executable, "-m", "dhns_search", "run", "--space", str(_space(tmp_path)), "--workers", "2",
            "--n-trials", "3", "--sampler", "random", "--pruner", "none", "--tracking-uri", "none",
            "--storage", f"journal:{journal}", "--set", "train.epochs=30"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _running_with_checkpoint(journal, "faults", proc)
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()  # the coordinating run dies; its workers (sessions of their own) get no signal
    proc.communicate()
    deadline = time.monotonic() + 120
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "the workers went on without their run"
        time.sleep(0.2)
    study = optuna.load_study(study_name="faults", storage=make_storage(f"journal:{journal}"))
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    stopped = [t for t in study.trials if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"] == "interrupted" for t in stopped)
    assert sorted(t.system_attrs["failed_trial"] for t in study.trials if t.state == TrialState.WAITING) == \
        [t.number for t in stopped]

    done = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="faults", storage=make_storage(f"journal:{journal}"))
    assert budget_used(study) == 3 and TrialState.RUNNING not in [t.state for t in study.trials]


def test_a_worker_whose_parent_is_gone_stops_as_on_sigterm(tmp_path):
    """watch_parent in a process whose parent is not the one it was started by: SIGTERM to itself, which
    the command line's handlers turn into a clean stop (here: a handler that records it)."""
    code = ("import os, signal, sys, time\n"
            "from dhns_search.search.workers import watch_parent\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
            "watch_parent(os.getppid() + 1000000, every=0.01)\n"
            "time.sleep(60)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 143 and time.monotonic() - started < 30, done.stderr


def test_no_trial_starts_after_a_stop_request_that_came_while_waiting_for_the_lock(tmp_path, monkeypatch):
    import contextlib
    import threading

    from dhns_search.search import trial_loop

    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 's.db'}"), study_name="s")
    stop = threading.Event()

    @contextlib.contextmanager
    def slow_lock(*args, **kwargs):
        stop.set()  # Ctrl-C while this worker waits for another worker's lock
        yield

    monkeypatch.setattr(trial_loop, "budget_lock", slow_lock)
    ran = []
    done = trial_loop.run_trials(study, lambda trial: ran.append(trial.number) or 0.0, storage_url="sqlite:///s.db",
                             n_trials=3, stop=stop)
    assert done.reason == "interrupted" and done.trials == [] and ran == [] and study.trials == []


def test_exit_codes_of_workers_say_which_were_lost_and_which_were_stopped():
    from dhns_search.search.workers import _INTERRUPTED, _lost_workers

    assert _lost_workers([0, -signal.SIGKILL, 143, -signal.SIGTERM, 2], ["cpu", None, "cpu", "cpu", "cpu"]) == [
        "worker 1 (auto) was killed by SIGKILL"]
    assert {130, 143, 129, -signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP} == _INTERRUPTED
