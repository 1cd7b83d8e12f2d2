"""What ``dhns-search status`` shows: every study in a storage (:func:`list_studies`), or one study in
detail (:func:`study_report`): state counts, objectives and caps, the best feasible trials (and, with
several objectives, the Pareto front with its knee), the infeasible trials and the latest failures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from dhns_search.errors import StudyError, warn
from dhns_search.search.objectives import ObjectiveSpec, study_caps, study_objectives
from dhns_search.search.options import DEFAULT_TOP
from dhns_search.search.queries import (
    Front,
    LeaderRow,
    best_trial,
    completed,
    infeasible,
    leaderboard,
    pareto_front,
    primary_value,
    state_counts,
    trial_measures,
    violation_text,
)
from dhns_search.search.recovery import budget_used, dead_workers
from dhns_search.search.storage import known_studies, make_storage, open_study
from dhns_search.search.urls import display_url

__all__ = ["FrontRow", "StudyCost", "StudyInfo", "StudyReport", "list_studies", "study_cost", "study_report"]


@dataclass
class StudyInfo:
    name: str
    storage: str
    n_trials: int
    states: dict[str, int]
    best_value: float | None  # the primary objective of the best feasible trial
    best_trial: int | None
    started: str | None
    objectives: list[str] = field(default_factory=list)  # labels
    front_size: int | None = None  # multi-objective: trials on the Pareto front
    knee_trial: int | None = None


def list_studies(storage: str | None = None) -> list[StudyInfo]:
    """Every study in ``storage`` (default: every ``studies/*.db``); a storage file that cannot be read (say
    one another program locks) is refused when it is the only one, else a warning."""
    out = []
    unreadable: list[str] = []
    known = known_studies(storage, unreadable)
    if unreadable and not known:
        raise StudyError("; ".join(unreadable))
    for reason in unreadable:
        warn(reason)
    for name, url in known:
        study = optuna.load_study(study_name=name, storage=make_storage(url, create=False))
        trials = study.get_trials(deepcopy=False)
        specs = study_objectives(study)
        best = best_trial(study)
        starts = [t.datetime_start for t in trials if t.datetime_start]
        info = StudyInfo(
            name=name,
            storage=display_url(url),
            n_trials=len(trials),
            states=state_counts(study),
            best_value=primary_value(best, specs) if best else None,
            best_trial=best.number if best else None,
            started=min(starts).strftime("%Y-%m-%d %H:%M") if starts else None,
            objectives=[s.label for s in specs],
        )
        if len(specs) > 1:
            front = pareto_front(study)
            info.front_size = len(front.trials)
            info.knee_trial = front.knee_trial.number if front.knee_trial else None
        out.append(info)
    return out


@dataclass
class FrontRow:
    """One trial of a Pareto front, as ``status`` shows it."""

    number: int
    values: dict[str, float]  # objective name -> value
    measures: dict[str, float]
    params: dict[str, Any]
    picks: list[str]  # the picks that choose this trial: "knee", "best-mrr", ...


@dataclass
class StudyReport:
    name: str
    storage: str
    states: dict[str, int]
    metric: str
    seed: int | None
    space: str | None
    rows: list[LeaderRow]  # best feasible first, by the primary objective
    failures: list[tuple[int, str]]  # (trial, reason) of the latest failed trials
    objectives: list[ObjectiveSpec] = field(default_factory=list)
    caps: dict[str, float] = field(default_factory=dict)
    front: list[FrontRow] = field(default_factory=list)  # multi-objective: the Pareto front, by trial number
    knee_trial: int | None = None
    n_feasible: int = 0
    #: (trial, primary value, what it violates) of the best infeasible completed trials
    infeasible: list[tuple[int, float, str]] = field(default_factory=list)
    n_infeasible: int = 0
    budget: int | None = None  # the study's --n-trials
    cpu_budget: float | None = None  # the study's --cpu-hours
    used: int = 0  # trials counted against it
    dead: list[tuple[int, str]] = field(default_factory=list)  # RUNNING trials of a dead worker of this machine
    cost: StudyCost | None = None  # CPU time the trials spent, disk their folders hold

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1


@dataclass
class StudyCost:
    """What a study has spent: CPU time of its finished trials, disk of its trial folders on this machine."""

    cpu_seconds: float  #: the sum of the trials' ``cpu_seconds`` (every thread of the trial's process)
    wall_seconds: float  #: the sum of the trials' ``trial_seconds``
    timed: int  #: trials that recorded their CPU time
    untimed: int  #: finished trials without it (recorded by an earlier version, or a worker that died)
    disk_bytes: int | None  #: bytes under the trial folders this machine can see; None when none can be seen
    checkpoints: int  #: checkpoint files (``*.pt``) among them (a running or interrupted trial keeps one)

    @property
    def cpu_hours(self) -> float:
        return self.cpu_seconds / 3600.0


def study_cost(study: optuna.Study) -> StudyCost:
    """CPU and wall time of the study's trials, and the disk its trial folders use (see :class:`StudyCost`)."""
    from pathlib import Path

    from dhns_search.search.recovery import RUN_DIR_ATTR

    cpu = wall = 0.0
    timed = untimed = 0
    folders: set[Path] = set()
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished():
            if "cpu_seconds" in t.user_attrs:
                cpu += float(t.user_attrs["cpu_seconds"])
                timed += 1
            else:
                untimed += 1
            wall += float(t.user_attrs.get("trial_seconds", 0.0))
        if t.system_attrs.get(RUN_DIR_ATTR):
            folders.add(Path(t.system_attrs[RUN_DIR_ATTR]))
    disk, checkpoints, seen = 0, 0, False
    for folder in folders:
        if not folder.is_dir():
            continue
        seen = True
        for f in folder.rglob("*"):
            if f.is_file():
                disk += f.stat().st_size
                checkpoints += f.suffix == ".pt"  # (not importing the trainer's name for it keeps torch out)
    return StudyCost(cpu_seconds=cpu, wall_seconds=wall, timed=timed, untimed=untimed,
                     disk_bytes=disk if seen else None, checkpoints=checkpoints)


def _front_rows(front: Front) -> list[FrontRow]:
    picks: dict[int, list[str]] = {}
    if front.knee_trial is not None:
        picks.setdefault(front.knee_trial.number, []).append("knee")
    if front.trials:
        for k, spec in enumerate(front.objectives):
            picks.setdefault(front.best_trial(k).number, []).append(f"best-{spec.label}")
    return [FrontRow(number=t.number, values={s.name: float(v) for s, v in zip(front.objectives, t.values)},
                     measures=trial_measures(t), params=dict(t.params), picks=picks.get(t.number, []))
            for t in front.trials]


def study_report(name: str, storage: str | None = None, top: int = DEFAULT_TOP) -> StudyReport:
    """One study (see the module docstring); ``top`` rows of the leaderboard and of infeasible trials."""
    study, url = open_study(name, storage)
    attrs = study.user_attrs
    specs = study_objectives(study)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    bad = infeasible(study)
    report = StudyReport(
        name=name,
        storage=display_url(url),
        states=state_counts(study),
        metric=attrs.get("dhns.metric", "value"),
        seed=attrs.get("dhns.seed"),
        space=attrs.get("dhns.space"),
        rows=leaderboard(study, top),
        failures=[(t.number, str(t.user_attrs.get("fail_reason", "unknown"))) for t in failed[-5:]],
        objectives=specs,
        caps=study_caps(study),
        n_feasible=len(completed(study)),
        infeasible=[(t.number, primary_value(t, specs), violation_text(study, t)) for t in bad[:top]],
        n_infeasible=len(bad),
        budget=attrs.get("dhns.n_trials"),
        cpu_budget=attrs.get("dhns.cpu_hours"),
        used=budget_used(study),
        dead=dead_workers(study),
        cost=study_cost(study),
    )
    if len(specs) > 1:
        front = pareto_front(study)
        report.front = _front_rows(front)
        report.knee_trial = front.knee_trial.number if front.knee_trial else None
    return report
