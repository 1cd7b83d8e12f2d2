"""One worker's trials: started one at a time under the study's budget lock, until the study's budget is
met (``--n-trials``, or ``--cpu-hours``: the CPU time its finished trials spent), this worker's cap or the
timeout is reached, or a stop is requested (Ctrl-C, SIGTERM).  The CPU budget is checked before each
trial, so a study ends at most one trial per worker beyond it.

``--n-trials`` is the study's budget across all workers (:func:`~.recovery.budget_used` says which
trials count).  Before each trial the worker sweeps trials of dead workers of this machine (they are
retried, :mod:`.recovery`), takes the budget lock (:func:`~.locks.budget_lock`), counts, and lets Optuna
start the next trial; the lock is released as soon as that trial exists (RUNNING), so the count of the
next worker includes it and the budget is met exactly.  Optuna's ``study.optimize`` runs each trial (one
at a time), with its heartbeat, its handling of failed trials, and the callbacks.

A trial interrupted by a stop request is failed ("interrupted") and queued again from its checkpoint, so
the next run (or any worker) continues it; a second Ctrl-C (``KeyboardInterrupt``) does the same for the
trial Optuna has just failed.  After a stop request no trial starts: the request is checked again once
the budget lock is held, right before the trial is created (a worker may wait for that lock).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dhns_search.errors import DhnsError
from dhns_search.search.locks import budget_lock
from dhns_search.search.recovery import (
    budget_used,
    cpu_spent,
    retried_numbers,
    retry_trial,
    sweep_dead_workers,
)
from dhns_search.search.trial import TRACKING_FAILED, WRITE_FAILED
from dhns_search.search.trial_folder import INTERRUPTED

__all__ = ["WorkerRun", "run_trials"]


@dataclass
class WorkerRun:
    """What one worker did: its trials and why it stopped (budget, cap, timeout, interrupted)."""

    trials: list[int] = field(default_factory=list)
    reason: str = "budget met"

    @property
    def interrupted(self) -> bool:
        return self.reason == "interrupted"


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], Any], *, storage_url: str,
               n_trials: int | None, per_worker: int | None = None, timeout: float | None = None,
               cpu_hours: float | None = None,
               stop: threading.Event | None = None, engine: Any = None, catch: tuple[type[Exception], ...] = (),
               callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> WorkerRun:
    """Run trials of ``study`` with ``objective`` as the module docstring says; returns what this worker did."""
    done = WorkerRun()
    t0 = time.monotonic()
    try:
        while True:
            if stop is not None and stop.is_set():
                done.reason = "interrupted"
                break
            if per_worker is not None and len(done.trials) >= per_worker:
                done.reason = f"--max-trials-per-worker {per_worker} reached"
                break
            if timeout is not None and time.monotonic() - t0 >= timeout:
                done.reason = f"--timeout {timeout:g} s reached"
                break
            sweep_dead_workers(study)
            started = _one_trial(study, objective, done, storage_url, n_trials, cpu_hours, engine, catch, callbacks,
                                 stop)
            if started is None:  # a stop request came while this worker waited for the lock
                done.reason = "interrupted"
                break
            if not started:
                done.reason = "budget met"
                if cpu_hours is not None and cpu_spent(study) >= cpu_hours * 3600.0:
                    done.reason = f"CPU budget met ({cpu_spent(study) / 3600.0:.2f} of {cpu_hours:g} CPU-hours)"
                break
    except (KeyboardInterrupt, DhnsError):  # a second Ctrl-C, a failing store or disk: queue the trial again
        _requeue_interrupted(study, done.trials[-1:])
        raise
    if done.interrupted:
        _requeue_interrupted(study, done.trials[-1:])
    return done


def _one_trial(study: optuna.Study, objective: Callable[[optuna.Trial], Any], done: WorkerRun, storage_url: str,
               n_trials: int | None, cpu_hours: float | None, engine: Any, catch: tuple[type[Exception], ...],
               callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]],
               stop: threading.Event | None = None) -> bool | None:
    """Start one trial unless the budget is met (False then) or a stop was requested (None then)."""
    with contextlib.ExitStack() as held:
        held.enter_context(budget_lock(storage_url, study.study_name, engine=engine))
        if stop is not None and stop.is_set():  # asked while waiting for the lock: start nothing
            return None
        if n_trials is not None and budget_used(study) >= n_trials:
            return False
        if cpu_hours is not None and cpu_spent(study) >= cpu_hours * 3600.0:
            return False

        def first_release(trial: optuna.Trial) -> Any:
            held.close()  # the trial exists (RUNNING): the next worker's count includes it
            done.trials.append(trial.number)
            return objective(trial)

        study.optimize(first_release, n_trials=1, catch=catch, callbacks=list(callbacks))
    return True


def _requeue_interrupted(study: optuna.Study, numbers: Sequence[int]) -> None:
    """Queue the interrupted trials among ``numbers`` again (once), so that a later run continues them."""
    if not numbers:
        return
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        reason = str(t.user_attrs.get("fail_reason", ""))
        if t.number in numbers and t.state == TrialState.FAIL and t.number not in retried and (
                reason in (INTERRUPTED, "KeyboardInterrupt") or reason.startswith((TRACKING_FAILED, WRITE_FAILED))):
            retry_trial(study, t)
