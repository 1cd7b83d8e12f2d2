"""Trials that outlive their worker: who runs a trial, finding trials whose worker died, retrying them
from their checkpoint, and counting the study's budget.

- Every trial records its worker (system attribute ``dhns.worker``: host, process id and the process's
  start time) and its run folder (``dhns.run_dir``), where the trainer checkpoints its full state at
  every evaluation (:mod:`dhns_search.training.checkpoint`).
- A trial whose worker died is failed and queued again with the same parameters, its intermediate
  values and its run folder (:class:`RetryFromCheckpoint`, Optuna's ``RetryHeartbeatStaleTrialCallback``
  without the dead trial's outcome attributes), so the retry continues training where the checkpoint
  left it and the pruner still sees the earlier evaluations.  Dead workers are found by Optuna's
  heartbeats on database storages (any machine) and, on every storage, at once by
  :func:`sweep_dead_workers` when the worker ran on this machine and its process is gone.
- A trial interrupted by Ctrl-C / SIGTERM is failed with the reason "interrupted" and queued the same way
  (:func:`retry_trial`), so the next ``run`` continues it.
- :func:`budget_used`: the trials that count against ``--n-trials`` (see its docstring).
"""

from __future__ import annotations

import copy
import os
import socket
import warnings
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "BUDGET_STATES",
    "RetryFromCheckpoint",
    "budget_used",
    "retried_numbers",
    "retry_trial",
    "running_elsewhere",
    "sweep_dead_workers",
    "this_worker",
]

#: user attributes a retry keeps from the trial it continues (the rest describe that trial's outcome)
_KEPT_USER_ATTRS = ("seed", "enqueued_from")
#: the states ``--n-trials`` counts (a failed trial that was retried counts once, through its retry)
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
WORKER_ATTR = "dhns.worker"
#: times a trial whose worker died (or that was interrupted) is retried from its checkpoint
MAX_RETRY = 3
RUN_DIR_ATTR = "dhns.run_dir"


class RetryFromCheckpoint(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a stale trial (same parameters, intermediate values, system attributes: the run
    folder with its checkpoint) without the user attributes that describe the dead trial's outcome, nor
    the dead trial's worker."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in _KEPT_USER_ATTRS}
        # not the dead worker: until the retry's own worker records itself, no sweep may take it for dead
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != WORKER_ATTR}
        super().__call__(study, trial)


def retry_callback() -> RetryFromCheckpoint:
    """The callback that queues a trial whose worker died again (the storages' heartbeat callback too)."""
    with warnings.catch_warnings():  # Optuna marks it experimental (since 2.8): said on every run otherwise
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryFromCheckpoint(max_retry=MAX_RETRY, inherit_intermediate_values=True)


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial`` (failed: dead worker or interrupted) again; it resumes from its checkpoint."""
    retry_callback()(study, trial)


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (None: no such process, a zombie, or
    no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":  # it died and its parent has not reaped it yet
        return None
    return fields[19] if len(fields) > 19 else None


def this_worker() -> dict[str, Any]:
    """This process as a trial's worker: host, pid and start time (tells a reused pid apart)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _alive(worker: dict[str, Any]) -> bool:
    pid = int(worker.get("pid", -1))
    if pid <= 0:
        return False
    start = _process_start(pid)
    if start is not None:
        return worker.get("start") in (None, start)
    if os.path.exists("/proc/self/stat"):  # /proc says it is gone (or a zombie)
        return False
    try:
        os.kill(pid, 0)  # no /proc (macOS): the pid exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_workers(study: optuna.Study) -> list[tuple[int, str]]:
    """``(trial, worker)`` of the RUNNING trials whose worker ran on this machine and is gone (what
    :func:`sweep_dead_workers` would fail); nothing is changed."""
    host = socket.gethostname()
    out = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER_ATTR)
        if isinstance(worker, dict) and worker.get("host") == host and not _alive(worker):
            out.append((trial.number, f"process {worker.get('pid')} on {host}"))
    return out


def sweep_dead_workers(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose worker ran on this machine and is gone, and queue their retries;
    returns their numbers.  Another worker sweeping at the same moment fails each trial at most once."""
    host = socket.gethostname()
    swept = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER_ATTR)
        if not isinstance(worker, dict) or worker.get("host") != host or _alive(worker):
            continue
        storage = study._storage  # the storage API Optuna's own fail_stale_trials uses
        try:  # the reason first: a finished trial takes no more attributes
            storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                        f"its worker (process {worker.get('pid')} on {host}) died")
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        retry_trial(study, storage.get_trial(trial._trial_id))
        swept.append(trial.number)
    return swept


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """The numbers of the trials that were retried (each is in a later trial's retry history)."""
    out: set[int] = set()
    for t in trials:
        out.update(int(n) for n in t.system_attrs.get("retry_history", []))
    return out


def budget_used(study: optuna.Study) -> int:
    """The trials that count against ``--n-trials``: COMPLETE, PRUNED, FAIL and RUNNING, as Optuna's
    ``MaxTrialsCallback`` with those states counts them, except that a failed trial that was queued
    again (dead worker, interrupted) counts once, through its retry.  WAITING trials do not count."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(1 for t in trials if t.state in BUDGET_STATES and not (t.state == TrialState.FAIL
                                                                      and t.number in retried))


def cpu_spent(study: optuna.Study) -> float:
    """CPU seconds the study's finished trials spent (their ``cpu_seconds``; trials of earlier versions and
    trials whose worker died recorded none), the measure of ``run --cpu-hours``."""
    return sum(float(t.user_attrs.get("cpu_seconds", 0.0)) for t in study.get_trials(deepcopy=False)
               if t.state.is_finished())


def running_elsewhere(study: optuna.Study, mine: Iterable[int] = ()) -> list[int]:
    """The numbers of RUNNING trials other than ``mine``."""
    skip = set(mine)
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number not in skip]
