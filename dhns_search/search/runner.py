"""``dhns-search run``: run (or continue) a study in four stages.

1. :func:`prepare`: everything the user wrote is validated before a study or MLflow run exists (options,
   space, ``--set``, ``--objective``, caps, ``--enqueue`` files); the dataset is loaded once (unless the
   space searches ``data.*``); the study is created, or continued when the name exists in the storage.
   The study's seed, objectives (one direction each) and caps are fixed when it is created, trial
   numbers continue, and the sampler's seed is derived from the study seed and the number of trials
   already there (so a continued study does not replay the same random start); a multi-objective study
   runs without a pruner (Optuna's pruners compare one value).
2. :func:`attach`: the MLflow parent run, found again by its tags, is RUNNING from here until the end,
   whatever happens.
3. :func:`optimise`: child runs a crashed process left RUNNING are ended, warm starts are enqueued, and
   the trials run (:class:`~dhns_search.search.trial.Objective`); failed trials are recorded and the
   study goes on.  After each trial the parent gets the progress metrics and a :class:`Monitor` (the
   command line's live table) sees the trial.
4. finish: the leaderboard, the best config and the plots go to the parent, which is ended
   (:func:`~dhns_search.search.publish.publish_results`); :func:`run_study` returns a
   :class:`StudySummary`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console

from dhns_search.config.io import read_preset, read_yaml
from dhns_search.data import load_from_config
from dhns_search.errors import ConfigError, StudyError, TrackingError, warn
from dhns_search.search.locks import Timeout as LockTimeout
from dhns_search.search.locks import budget_lock, file_lock
from dhns_search.search.objectives import (
    ObjectiveSpec,
    parse_objectives,
    primary_index,
)
from dhns_search.search.options import DEFAULT_N_TRIALS, RunOptions
from dhns_search.search.publish import publish_progress, publish_results
from dhns_search.search.queries import best_trial, infeasible, pareto_front, primary_value, state_counts
from dhns_search.search.recovery import running_elsewhere, sweep_dead_workers
from dhns_search.search.resources import memory_kind
from dhns_search.search.samplers import (
    check_sampler,
    make_pruner,
    make_sampler,
    resolve_pruner,
)
from dhns_search.search.seeds import derive_seed
from dhns_search.search.space import SearchSpace, load_space
from dhns_search.search.storage import check_study_name, make_storage
from dhns_search.search.study_setup import create_or_continue, joined_options, space_changed, study_notes
from dhns_search.search.trial import Objective, TrialFailed, is_tracking_failure, tracking_reason
from dhns_search.search.trial_folder import check_work_dir, study_work_dir
from dhns_search.search.trial_loop import WorkerRun, run_trials
from dhns_search.search.urls import default_storage, display_url, sqlite_path
from dhns_search.tracking.metrics import METRIC_SETS, name_metrics
from dhns_search.tracking.store import open_store
from dhns_search.tracking.study import MlflowBridge, StudyDescription

__all__ = ["Monitor", "PreparedRun", "StudyInterrupted", "StudySummary", "attach", "optimise", "prepare",
           "run_study"]


@dataclass
class PreparedRun:
    """A study ready for its trials: everything :func:`prepare` settled."""

    name: str
    space: SearchSpace
    study: optuna.Study
    storage_url: str
    seed: int
    metric: str  # the space's train.metric
    objectives: list[ObjectiveSpec]
    caps: dict[str, float]
    pruner: str
    dataset: Any  # shared by every trial; None when the space searches data.*
    enqueued: list[tuple[dict[str, Any], str]]  # warm starts: (parameter values, where they come from)
    n_trials: int | None
    cpu_hours: float | None  # the study's CPU budget (run --cpu-hours), or None
    #: what the user should know before the trials start (printed, and kept in the summary)
    notes: list[str] = field(default_factory=list)
    storage: Any = None  # the Optuna storage object (a database storage's engine takes the budget lock)
    work_dir: Path | None = None  # this study's folder of trial folders
    lock: Any = None  # a SQLite study: the one-writer lock this process holds


class StudyInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run cleanly: the trial in progress checkpointed and was queued again."""

    def __init__(self, summary: StudySummary) -> None:
        super().__init__(f"study {summary.study} interrupted")
        self.summary = summary


class Monitor(Protocol):
    """Watches a run, e.g. the command line's live table of trials."""

    def watch(self, run: PreparedRun) -> AbstractContextManager[object]:
        """A context that is open while the trials run."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Called after each trial (an Optuna callback)."""


@dataclass
class StudySummary:
    study: str
    storage: str
    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None
    seed: int
    metric: str
    states: dict[str, int]
    n_trials: int
    new_trials: list[int]
    best_value: float | None  # primary objective of the best feasible trial
    best_trial: int | None
    best_params: dict[str, Any]
    seconds: float
    plots: list[str] = field(default_factory=list)
    plots_skipped: dict[str, str] = field(default_factory=dict)
    objectives: list[ObjectiveSpec] = field(default_factory=list)
    caps: dict[str, float] = field(default_factory=dict)
    pruner: str = "median"
    #: multi-objective: (trial, values) of the Pareto front, and the knee
    front: list[tuple[int, list[float]]] = field(default_factory=list)
    knee_trial: int | None = None
    n_infeasible: int = 0
    notes: list[str] = field(default_factory=list)
    budget: int | None = None  # the study's --n-trials
    stopped: str = ""  # why this worker stopped (budget met, interrupted, ...)
    parent_ended: bool = True  # False: other workers still run trials, the last one ends the parent


def run_study(
    options: RunOptions,
    *,
    console: Console | None = None,
    trainer: Callable[..., Any] | None = None,
    monitor: Monitor | None = None,
    stop: threading.Event | None = None,
) -> StudySummary:
    """Run (or continue) a study as ``options`` say; returns its summary.  See the module docstring.

    ``trainer`` replaces :func:`dhns_search.training.train` (tests); ``monitor`` watches the trials;
    ``stop`` (set by the command line on Ctrl-C / SIGTERM) ends the trial in progress at its next batch,
    checkpointed and queued again, and then raises :class:`StudyInterrupted`.
    """
    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    if options.join:  # `dhns-search worker`: what to run comes from the study
        options = joined_options(options)
    _set_threads_and_device(options)
    run = prepare(options)
    try:
        for note in run.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        bridge = attach(run, options)
        status, done = "FAILED", WorkerRun(reason="failed")
        try:
            done = optimise(run, options, bridge, trainer=trainer, monitor=monitor, stop=stop)
            status = "KILLED" if done.interrupted else "FINISHED"
        except KeyboardInterrupt:
            status, done.reason = "KILLED", "interrupted"
            raise
        finally:  # finish
            plots, ended = _finish(run, bridge, status, done)
        tracking = options.tracking_uri if bridge is not None else None
        summary = _summary(run, bridge, tracking, done.trials, plots, time.perf_counter() - t0)
        summary.stopped, summary.parent_ended = done.reason, ended
    finally:
        if run.lock is not None:
            run.lock.release()
    if done.interrupted:
        raise StudyInterrupted(summary)
    return summary


def _set_threads_and_device(options: RunOptions) -> None:
    """A worker's share of the cores, and its GPU (``cuda:N``) as the current CUDA device."""
    import torch

    if options.threads is not None:
        torch.set_num_threads(max(1, options.threads))
    if options.device and options.device.startswith("cuda:") and torch.cuda.is_available():
        index = int(options.device.partition(":")[2])
        if index < torch.cuda.device_count():
            torch.cuda.set_device(index)


def _finish(run: PreparedRun, bridge: MlflowBridge | None, status: str,
            done: WorkerRun) -> tuple[tuple[list[str], dict[str, str]], bool]:
    """Record this worker's end on the parent run; the last worker (no trial of another one running: the
    budget is met, or every worker stopped) publishes the results and ends the parent."""
    if bridge is None:
        return ([], {}), True
    try:
        return _publish_end(run, bridge, status, done)
    except Exception as err:
        if not is_tracking_failure(err):
            raise
        # at least end the parent if the store takes that (no other worker running): not left RUNNING
        ended = False
        with contextlib.suppress(Exception):
            if not running_elsewhere(run.study, done.trials):
                bridge.end_study(status)
                ended = True
        return ([], {"artifacts": tracking_reason(err)}), ended  # the next run catches up (reconcile)


def _publish_end(run: PreparedRun, bridge: MlflowBridge, status: str,
                 done: WorkerRun) -> tuple[tuple[list[str], dict[str, str]], bool]:
    study = run.study
    sweep_dead_workers(study)
    last = not running_elsewhere(study, done.trials)
    bridge.set_parent_tags({f"dhns.worker.{_worker_key()}": f"ended {_now()}: {len(done.trials)} trials, "
                                                            f"{done.reason}"})
    if not last:
        publish_progress(bridge, study, run.objectives, run.caps, step=max([*done.trials, 0]))
        return ([], {}), False
    return publish_results(study, bridge, status, end=True), True


def _worker_key() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------- prepare
def prepare(options: RunOptions) -> PreparedRun:
    """Validate everything, load the dataset, create or continue the study (see the module docstring)."""
    _check_options(options)
    caps = options.caps()
    space = load_space(options.space, overrides=options.overrides)
    name = check_study_name(options.study or space.path.stem)  # type: ignore[union-attr]
    metric = space.check_overrides(options.overrides).train.metric
    requested = parse_objectives(options.objectives, metric) if options.objectives else None
    if requested is not None:
        check_sampler(options.sampler, requested)
        resolve_pruner(options.pruner, requested)
    _check_measurable(requested or [], caps, options.device)
    enqueued = _enqueue_sources(space, options.enqueue)
    dataset = _load_dataset(space, options)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if options.tracking_uri not in (None, "", "none"):
        open_store(options.tracking_uri)  # checked before the study is written
    storage_url = options.storage or default_storage(name)
    lock = _one_writer(storage_url, name)
    try:
        storage = make_storage(storage_url)
        with budget_lock(storage_url, name, engine=getattr(storage, "engine", None)):  # workers starting together
            study, seed, specs, caps = create_or_continue(name, storage, options, space, metric, requested, caps)
        run = PreparedRun(name=name, space=space, study=study, storage_url=storage_url, seed=seed, metric=metric,
                          objectives=specs, caps=caps, pruner="none", dataset=dataset, enqueued=enqueued,
                          n_trials=_budget(study, options), cpu_hours=_cpu_budget(study, options), notes=study_notes(specs, caps, options.sampler),
                          storage=storage, lock=lock,
                          work_dir=study_work_dir(options.work_dir, name, study.user_attrs["dhns.uid"]))
        _configure(run, options)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return run


def _one_writer(storage_url: str, name: str) -> Any:
    """A SQLite study takes one process at a time: the file lock it holds while it runs (None elsewhere)."""
    path = sqlite_path(storage_url)
    if path is None:
        return None
    lock = file_lock(path, suffix=f".{name}.run", timeout=0)
    try:
        lock.acquire()
    except LockTimeout:
        raise StudyError(
            f"study {name!r} in {display_url(storage_url)} is being run by another process: SQLite takes one "
            f"writer (two would propose the same trials). Wait for it, or run several workers on a journal or "
            f"database storage: dhns-search run --study {name} --workers N --storage journal:studies/{name}.journal"
        ) from None
    return lock


def _budget(study: optuna.Study, options: RunOptions) -> int | None:
    """The study's ``--n-trials``: given now (and then stored), else the study's own, else the default."""
    n_trials = options.n_trials if options.n_trials is not None else study.user_attrs.get("dhns.n_trials")
    cpu_budget = options.cpu_hours if options.cpu_hours is not None else study.user_attrs.get("dhns.cpu_hours")
    if n_trials is None and options.timeout is None and cpu_budget is None:
        n_trials = DEFAULT_N_TRIALS
    if n_trials is not None and study.user_attrs.get("dhns.n_trials") != n_trials:
        study.set_user_attr("dhns.n_trials", int(n_trials))
    return n_trials


def _cpu_budget(study: optuna.Study, options: RunOptions) -> float | None:
    """The study's ``--cpu-hours``: given now (and then stored), else the study's own, else none."""
    if options.cpu_hours is not None and study.user_attrs.get("dhns.cpu_hours") != options.cpu_hours:
        study.set_user_attr("dhns.cpu_hours", float(options.cpu_hours))
    return study.user_attrs.get("dhns.cpu_hours")


def _configure(run: PreparedRun, options: RunOptions) -> None:
    """The continued study's checks, its pruner and sampler, dead trials failed and queued again."""
    study, specs = run.study, run.objectives
    check_sampler(options.sampler, specs)  # a continued study: its own objectives decide
    name_metrics(study, specs)  # optuna-dashboard shows them instead of "Objective 0"
    run.pruner = resolve_pruner(options.pruner, specs)
    _check_measurable(specs, run.caps, options.device)
    study.pruner = make_pruner(run.pruner, options.pruner_startup)
    if isinstance(run.storage, optuna.storages.RDBStorage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # trials of a dead worker (heartbeat) -> FAIL, retried
    run.notes += space_changed(study, run.name, run.space)
    swept = sweep_dead_workers(study)  # this machine's dead workers: at once
    if swept:
        run.notes.append(f"trial(s) {', '.join(map(str, swept))} of a worker that died are queued again; they "
                         "continue from their checkpoints")
    if not options.join:  # what `dhns-search worker` reads to join this study
        study.set_user_attr("dhns.run", {"space": str(run.space.path), "overrides": list(options.overrides),
                                         "sampler": options.sampler, "pruner": options.pruner,
                                         "pruner_startup": options.pruner_startup,
                                         "mlflow_metrics": options.mlflow_metrics})
    existing = len(study.get_trials(deepcopy=False))
    # Reproducible on SQLite (one worker); on a shared storage several workers may start together, so
    # each gets its own sampler seed (else they would propose the same start-up trials).
    worker = () if run.storage_url.startswith("sqlite") else (socket.gethostname(), os.getpid())
    study.sampler = make_sampler(options.sampler, derive_seed(run.seed, "sampler", existing, *worker))


def _check_options(options: RunOptions) -> None:
    """The options that need neither the space nor the study."""
    check_sampler(options.sampler, ())
    if options.mlflow_metrics not in METRIC_SETS:
        raise ConfigError(f"--mlflow-metrics must be {' or '.join(METRIC_SETS)} (got {options.mlflow_metrics!r})")
    if options.pruner is not None:
        make_pruner(options.pruner, options.pruner_startup)
    elif options.pruner_startup is not None:
        make_pruner("median", options.pruner_startup)
    if options.study is not None:
        check_study_name(options.study)
    if options.n_trials is not None and options.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1 (got {options.n_trials})")
    if options.max_trials_per_worker is not None and options.max_trials_per_worker < 1:
        raise ConfigError(f"--max-trials-per-worker must be at least 1 (got {options.max_trials_per_worker})")
    if options.timeout is not None and not 0 < options.timeout < float("inf"):
        raise ConfigError(f"--timeout must be a positive number of seconds (got {options.timeout})")
    if options.storage is not None and not options.storage.strip():
        raise ConfigError("--storage: empty; give a storage URL, or leave --storage out for "
                          "sqlite:///studies/studies.db")
    if options.tracking_uri is not None and not options.tracking_uri.strip():
        raise ConfigError("--tracking-uri: empty; give an MLflow tracking URI, or none to turn MLflow off")
    if options.objectives is not None and not options.objectives.strip(" ,"):
        raise ConfigError("--objective: empty; give one or more objectives (e.g. mrr,epoch_seconds), or leave "
                          "--objective out for the space's train.metric")
    check_work_dir(options.work_dir)
    if options.cpu_hours is not None and not 0 < options.cpu_hours < float("inf"):
        raise ConfigError(f"--cpu-hours must be a positive number of hours (got {options.cpu_hours})")
    if options.device is not None and not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", options.device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N (got {options.device!r})")
    if options.device is not None and options.device.startswith("cuda"):
        from dhns_search.training.loop import resolve_device

        resolve_device(options.device)  # no GPU, or not that one: refused before a study exists


def _check_measurable(specs: Sequence[ObjectiveSpec], caps: dict[str, float], device: str | None) -> None:
    """Refuse a memory objective or cap where this machine cannot measure memory."""
    wants = any(s.name == "peak_memory_mb" for s in specs) or "peak_memory_mb" in caps
    if wants and device in (None, "auto", "cpu") and memory_kind(cuda=False) == "unavailable":
        raise ConfigError("peak_memory_mb: this platform has neither /proc nor the resource module, so the "
                          "memory of a CPU trial cannot be measured; drop peak_memory_mb / --max-memory-mb")


def _enqueue_sources(space: SearchSpace, items: Sequence[str]) -> list[tuple[dict[str, Any], str]]:
    out = []
    for item in items:
        if not item.strip() or item.strip() == "preset:":
            raise ConfigError(f"--enqueue: empty{'' if not item.strip() else ' preset name'}; give a config YAML "
                              "file, preset:NAME, or a YAML file mapping parameter names to values")
        if item.startswith("preset:"):
            data, source = read_preset(item[len("preset:") :]), item
        else:
            data, source = read_yaml(item), item
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"{source}: --enqueue expects a config YAML or a mapping of parameter values")
        out.append((space.enqueue_values(data, source), source))
    return out


def _load_dataset(space: SearchSpace, options: RunOptions) -> Any:
    """The dataset shared by every trial, or None when the space searches ``data.*``."""
    if any(t.startswith("data.") for p in space.params for t in p.targets):
        return None
    cfg = space.check_overrides(options.overrides)
    dataset = load_from_config(cfg.data)
    for message in dataset.warnings:  # once per study, not once per trial
        warn(message)
    return dataset


# ----------------------------------------------------------------------------------------- attach
def attach(run: PreparedRun, options: RunOptions, *, worker: bool = True) -> MlflowBridge | None:
    """Start (or find again) the study's MLflow parent run; None when tracking is off.  A ``worker``
    records its start on it (tag ``dhns.worker.<host>.<pid>``)."""
    if options.tracking_uri in (None, "", "none"):
        return None
    bridge = MlflowBridge(options.tracking_uri, run.name,
                          study_uid=run.study.user_attrs["dhns.uid"])
    bridge.start_study({
        "dhns.space": str(run.space.path),
        "dhns.space_sha256": run.space.sha256,
        "dhns.sampler": options.sampler,
        "dhns.pruner": run.pruner,
        "dhns.seed": run.seed,
        "dhns.storage": display_url(run.storage_url),
        "dhns.metric": run.metric,
        "dhns.objectives": ",".join(f"{s.name}:{s.direction}" for s in run.objectives),
        "dhns.caps": ",".join(f"{k}<={v:g}" for k, v in run.caps.items()),
        "dhns.overrides": " ".join(options.overrides),
    }, about=_study_description(run, options))
    if worker:
        bridge.set_parent_tags({f"dhns.worker.{_worker_key()}": f"started {_now()} on {options.device or 'auto'}"})
    return bridge


def _study_description(run: PreparedRun, options: RunOptions) -> StudyDescription:
    """What the study's MLflow experiment and runs are told: the space's description, the searched
    parameters and the objectives (for the saved views), the dataset and device (provenance)."""
    specs = run.objectives
    return StudyDescription(text=run.space.description, params=run.space.names,
                            conditional=[p.name for p in run.space.params if p.when],
                            direction=specs[primary_index(specs)].direction,
                            objectives=[s.label for s in specs] if len(specs) > 1 else [], metric=run.metric,
                            dataset=run.dataset, device=options.device, metric_set=options.mlflow_metrics)


# --------------------------------------------------------------------------------------- optimise
def optimise(run: PreparedRun, options: RunOptions, bridge: MlflowBridge | None, *,
             trainer: Callable[..., Any] | None = None, monitor: Monitor | None = None,
             stop: threading.Event | None = None) -> WorkerRun:
    """Run this worker's trials (see the module docstring and :mod:`.trial_loop`); returns what it did."""
    study = run.study
    if bridge is not None:  # catch up with earlier runs: their crashed children, the space file
        bridge.reconcile({t.number: t.state.name for t in study.get_trials(deepcopy=False)})
        if run.space.path is not None:
            bridge.log_parent_file(run.space.path)
    for values, source in run.enqueued:
        study.enqueue_trial(values, user_attrs={"enqueued_from": source}, skip_if_exists=True)
    objective = Objective(run.space, study_seed=run.seed, overrides=options.overrides, device=options.device,
                          bridge=bridge, dataset=run.dataset, trainer=trainer, objectives=run.objectives,
                          caps=run.caps, progress=getattr(monitor, "trial_progress", None),
                          work_dir=run.work_dir, stop=stop)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if bridge is None:
            return
        try:
            publish_progress(bridge, study, run.objectives, run.caps, step=trial.number)
        except Exception as err:
            if not is_tracking_failure(err):
                raise
            raise TrackingError(f"{tracking_reason(err, bridge.tracking_uri)} after trial {trial.number}. The study is "
                                "consistent (the trial is recorded); run the same command again once the store "
                                "answers") from None

    callbacks = [after_trial] if monitor is None else [after_trial, monitor]
    watching = contextlib.nullcontext() if monitor is None else monitor.watch(run)
    with watching, warnings.catch_warnings():
        # CMA-ES says so after every constrained trial; the note at the start said it once
        warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler")
        return run_trials(study, objective, storage_url=run.storage_url, n_trials=run.n_trials,
                          cpu_hours=run.cpu_hours,
                          per_worker=options.max_trials_per_worker, timeout=options.timeout, stop=stop,
                          engine=getattr(run.storage, "engine", None), catch=(TrialFailed,), callbacks=callbacks)


# ----------------------------------------------------------------------------------------- finish
def _summary(run: PreparedRun, bridge: MlflowBridge | None, tracking_uri: str | None, new_trials: list[int],
             plots: tuple[list[str], dict[str, str]], seconds: float) -> StudySummary:
    study, specs = run.study, run.objectives
    best = best_trial(study)
    summary = StudySummary(
        study=run.name,
        storage=display_url(run.storage_url),
        tracking_uri=tracking_uri,
        experiment_id=bridge.experiment_id if bridge else None,
        parent_run_id=bridge.parent_run_id if bridge else None,
        seed=run.seed,
        metric=run.metric,
        states=state_counts(study),
        n_trials=len(study.get_trials(deepcopy=False)),
        new_trials=new_trials,
        best_value=primary_value(best, specs) if best else None,
        best_trial=best.number if best else None,
        best_params=dict(best.params) if best else {},
        seconds=seconds,
        plots=plots[0],
        plots_skipped=plots[1],
        objectives=specs,
        caps=run.caps,
        pruner=run.pruner,
        n_infeasible=len(infeasible(study)),
        notes=run.notes,
        budget=run.n_trials,
    )
    if len(specs) > 1:
        front = pareto_front(study)
        summary.front = [(t.number, [float(v) for v in t.values]) for t in front.trials]
        summary.knee_trial = front.knee_trial.number if front.knee_trial else None
    return summary
