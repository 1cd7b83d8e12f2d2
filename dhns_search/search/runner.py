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
   the trials run (:class:`~dhns_search.search.objective.Objective`); failed trials are recorded and the
   study goes on.  After each trial the parent gets the progress metrics and a :class:`Monitor` (the
   command line's live table) sees the trial.
4. finish: the leaderboard, the best config and the plots go to the parent, which is ended
   (:func:`~dhns_search.search.publish.publish_results`); :func:`run_study` returns a
   :class:`StudySummary`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console

from dhns_search.config.io import read_preset, read_yaml
from dhns_search.data import load_from_config
from dhns_search.errors import ConfigError, StudyError, warn
from dhns_search.search.objective import Objective, TrialFailed
from dhns_search.search.options import DEFAULT_N_TRIALS, RunOptions
from dhns_search.search.publish import publish_progress, publish_results
from dhns_search.search.queries import best_trial, infeasible, pareto_front, primary_value, state_counts
from dhns_search.search.resources import memory_kind
from dhns_search.search.run_metrics import METRIC_SETS, name_metrics
from dhns_search.search.samplers import (
    CONSTRAINED_SAMPLERS,
    check_sampler,
    make_pruner,
    make_sampler,
    resolve_pruner,
)
from dhns_search.search.seeds import derive_seed
from dhns_search.search.space import SearchSpace, load_space
from dhns_search.search.storage import check_study_name, make_storage
from dhns_search.search.targets import (
    CAPS,
    ObjectiveSpec,
    describe,
    parse_objectives,
    primary_index,
    specs_to_attr,
    study_caps,
    study_objectives,
)
from dhns_search.search.tracking import MlflowBridge, StudyDescription, prepare_tracking_uri
from dhns_search.search.urls import default_storage, display_url

__all__ = ["Monitor", "PreparedRun", "StudySummary", "attach", "optimise", "prepare", "run_study"]


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
    #: what the user should know before the trials start (printed, and kept in the summary)
    notes: list[str] = field(default_factory=list)


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


def run_study(
    options: RunOptions,
    *,
    console: Console | None = None,
    trainer: Callable[..., Any] | None = None,
    monitor: Monitor | None = None,
) -> StudySummary:
    """Run (or continue) a study as ``options`` say; returns its summary.  See the module docstring.

    ``trainer`` replaces :func:`dhns_search.training.train` (tests); ``monitor`` watches the trials.
    """
    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    run = prepare(options)
    for note in [*run.notes, *_space_changed(run)]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    bridge = attach(run, options)
    status = "FAILED"
    try:
        new_trials = optimise(run, options, bridge, trainer=trainer, monitor=monitor)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:  # finish
        plots = publish_results(run.study, bridge, status)
    tracking = options.tracking_uri if bridge is not None else None
    return _summary(run, bridge, tracking, new_trials, plots, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------- prepare
def prepare(options: RunOptions) -> PreparedRun:
    """Validate everything, load the dataset, create or continue the study (see the module docstring)."""
    _check_options(options)
    if options.tracking_uri not in (None, "", "none"):
        prepare_tracking_uri(options.tracking_uri)  # before anything is written anywhere
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
    n_trials = options.n_trials
    if n_trials is None and options.timeout is None:
        n_trials = DEFAULT_N_TRIALS
    dataset = _load_dataset(space, options)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_url = options.storage or default_storage(name)
    storage = make_storage(storage_url)
    study, seed, specs, caps = _create_or_continue(name, storage, options, space, metric, requested, caps)
    check_sampler(options.sampler, specs)  # a continued study: its own objectives decide
    name_metrics(study, specs)  # optuna-dashboard shows them instead of "Objective 0"
    pruner = resolve_pruner(options.pruner, specs)
    _check_measurable(specs, caps, options.device)
    study.pruner = make_pruner(pruner)
    if isinstance(storage, optuna.storages.RDBStorage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # trials of a crashed process -> FAIL
    existing = len(study.get_trials(deepcopy=False))
    # Reproducible on SQLite (one worker); on a server database several workers may start together, so
    # each gets its own sampler seed (else they would propose the same start-up trials).
    worker = () if storage_url.startswith("sqlite") else (socket.gethostname(), os.getpid())
    study.sampler = make_sampler(options.sampler, derive_seed(seed, "sampler", existing, *worker))
    return PreparedRun(name=name, space=space, study=study, storage_url=storage_url, seed=seed, metric=metric,
                       objectives=specs, caps=caps, pruner=pruner, dataset=dataset, enqueued=enqueued,
                       n_trials=n_trials, notes=_notes(specs, caps, options.sampler))


def _check_options(options: RunOptions) -> None:
    """The options that need neither the space nor the study."""
    check_sampler(options.sampler, ())
    if options.mlflow_metrics not in METRIC_SETS:
        raise ConfigError(f"--mlflow-metrics must be {' or '.join(METRIC_SETS)} (got {options.mlflow_metrics!r})")
    if options.pruner is not None:
        make_pruner(options.pruner)
    if options.n_trials is not None and options.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1 (got {options.n_trials})")
    if options.timeout is not None and options.timeout <= 0:
        raise ConfigError(f"--timeout must be positive (got {options.timeout})")
    if options.device is not None and options.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda (got {options.device!r})")


def _check_measurable(specs: Sequence[ObjectiveSpec], caps: dict[str, float], device: str | None) -> None:
    """Refuse a memory objective or cap where this machine cannot measure memory."""
    wants = any(s.name == "peak_memory_mb" for s in specs) or "peak_memory_mb" in caps
    if wants and device in (None, "auto", "cpu") and memory_kind(cuda=False) == "unavailable":
        raise ConfigError("peak_memory_mb: this platform has neither /proc nor the resource module, so the "
                          "memory of a CPU trial cannot be measured; drop peak_memory_mb / --max-memory-mb")


def _enqueue_sources(space: SearchSpace, items: Sequence[str]) -> list[tuple[dict[str, Any], str]]:
    out = []
    for item in items:
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


def _caps_text(caps: dict[str, float]) -> str:
    return ", ".join(f"{CAPS[k]} {v:g}" for k, v in caps.items()) or "no caps"


def _create_or_continue(name: str, storage: optuna.storages.BaseStorage, options: RunOptions,
                        space: SearchSpace, metric: str, specs: list[ObjectiveSpec] | None,
                        caps: dict[str, float]) -> tuple[optuna.Study, int, list[ObjectiveSpec], dict[str, float]]:
    """Create the study or load it; returns it with its seed, objectives and caps.

    ``specs`` None (no ``--objective``) and empty ``caps`` mean "the study's own" when it exists and
    "the defaults" when it is created.  A continued study must get the same objectives and caps.
    """
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # a new study (another worker may create it meanwhile: load_if_exists)
        new_specs = specs or parse_objectives(None, metric)
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    directions=[s.direction for s in new_specs])
    if "dhns.uid" not in study.user_attrs:  # a new study: record what defines it
        chosen = specs or parse_objectives(None, metric)
        if [d.name.lower() for d in study.directions] != [s.direction for s in chosen]:
            raise StudyError(f"study {name!r} exists with {len(study.directions)} direction(s) but no dhns-search "
                             "attributes; use another --study name")
        seed = 0 if options.seed is None else options.seed
        for key, value in {"dhns.uid": uuid.uuid4().hex, "dhns.seed": seed, "dhns.space": str(space.path),
                           "dhns.space_sha256": space.sha256, "dhns.metric": metric,
                           "dhns.objectives": specs_to_attr(chosen), "dhns.caps": dict(caps)}.items():
            study.set_user_attr(key, value)
        return study, seed, chosen, dict(caps)
    return study, *_check_continued(study, name, options.seed, metric, specs, caps)


def _check_continued(study: optuna.Study, name: str, seed: int | None, metric: str,
                     specs: list[ObjectiveSpec] | None, caps: dict[str, float]
                     ) -> tuple[int, list[ObjectiveSpec], dict[str, float]]:
    """A continued study keeps its seed, metric, objectives and caps: the ones given must match."""
    attrs = study.user_attrs
    stored_seed = int(attrs.get("dhns.seed", 0))
    if seed is not None and seed != stored_seed:
        raise StudyError(
            f"study {name!r} was created with --seed {stored_seed}; continue it with that seed "
            "(or leave --seed out), or start a new study with --study NAME"
        )
    if attrs.get("dhns.metric", metric) != metric:
        raise StudyError(f"study {name!r} optimises {attrs['dhns.metric']}, this space's config says {metric}")
    stored = study_objectives(study)
    if specs is not None and [(s.name, s.direction) for s in specs] != [(s.name, s.direction) for s in stored]:
        raise StudyError(
            f"study {name!r} was created with the objectives {describe(stored)}; --objective gives "
            f"{describe(specs)}. Continue it without --objective (or with the same list), or start a new study "
            "with --study NAME"
        )
    stored_caps = study_caps(study)
    if caps and caps != stored_caps:
        raise StudyError(
            f"study {name!r} was created with {_caps_text(stored_caps)}; this run asks for {_caps_text(caps)}. "
            "Continue it without the caps options (or with the same values), or start a new study with --study NAME"
        )
    return stored_seed, stored, stored_caps


def _notes(specs: list[ObjectiveSpec], caps: dict[str, float], sampler: str) -> list[str]:
    notes = []
    if len(specs) > 1:
        notes.append(f"{len(specs)} objectives ({describe(specs)}): pruning is off (Optuna's pruners compare one "
                     "value), every trial trains to the end")
    if caps:
        steer = ("the sampler avoids infeasible regions" if sampler in CONSTRAINED_SAMPLERS else
                 f"--sampler {sampler} does not use them when proposing trials (tpe, nsga2 and gp do)")
        notes.append(f"caps {_caps_text(caps)}: trials over a cap are kept but marked infeasible; {steer}")
    return notes


def _space_changed(run: PreparedRun) -> list[str]:
    """A note when the study was created with another version of its space file."""
    attrs = run.study.user_attrs
    if attrs.get("dhns.space_sha256", run.space.sha256) == run.space.sha256:
        return []
    note = (f"study {run.name!r} was created with another version of its space ({attrs.get('dhns.space')}); "
            "earlier trials keep their own parameters")
    return [note]


# ----------------------------------------------------------------------------------------- attach
def attach(run: PreparedRun, options: RunOptions) -> MlflowBridge | None:
    """Start (or find again) the study's MLflow parent run; None when tracking is off."""
    if options.tracking_uri in (None, "", "none"):
        return None
    bridge = MlflowBridge(prepare_tracking_uri(options.tracking_uri), run.name,
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
    return bridge


def _study_description(run: PreparedRun, options: RunOptions) -> StudyDescription:
    """What the study's MLflow experiment and runs are told: the space's description, the searched
    parameters and the objectives (for the saved views), the dataset and device (provenance)."""
    specs = run.objectives
    return StudyDescription(text=run.space.description, params=run.space.names,
                            direction=specs[primary_index(specs)].direction,
                            objectives=[s.label for s in specs] if len(specs) > 1 else [], metric=run.metric,
                            dataset=run.dataset, device=options.device, metric_set=options.mlflow_metrics)


# --------------------------------------------------------------------------------------- optimise
def optimise(run: PreparedRun, options: RunOptions, bridge: MlflowBridge | None, *,
             trainer: Callable[..., Any] | None = None, monitor: Monitor | None = None) -> list[int]:
    """Run the trials (see the module docstring); returns the numbers of the trials this run made."""
    study = run.study
    if bridge is not None:  # catch up with earlier runs: their crashed children, the space file
        bridge.reconcile({t.number: t.state.name for t in study.get_trials(deepcopy=False)})
        if run.space.path is not None:
            bridge.log_parent_file(run.space.path)
    for values, source in run.enqueued:
        study.enqueue_trial(values, user_attrs={"enqueued_from": source}, skip_if_exists=True)
    objective = Objective(run.space, study_seed=run.seed, overrides=options.overrides, device=options.device,
                          bridge=bridge, dataset=run.dataset, trainer=trainer, objectives=run.objectives,
                          caps=run.caps, progress=getattr(monitor, "trial_progress", None))
    new_trials: list[int] = []

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        new_trials.append(trial.number)
        if bridge is not None:
            publish_progress(bridge, study, run.objectives, run.caps, step=trial.number)

    callbacks = [after_trial] if monitor is None else [after_trial, monitor]
    watching = contextlib.nullcontext() if monitor is None else monitor.watch(run)
    with watching, warnings.catch_warnings():
        # CMA-ES says so after every constrained trial; the note at the start said it once
        warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler")
        study.optimize(objective, n_trials=run.n_trials, timeout=options.timeout, catch=(TrialFailed,),
                       callbacks=callbacks)
    return new_trials


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
    )
    if len(specs) > 1:
        front = pareto_front(study)
        summary.front = [(t.number, [float(v) for v in t.values]) for t in front.trials]
        summary.knee_trial = front.knee_trial.number if front.knee_trial else None
    return summary
