"""Questions asked of a study: its completed and feasible trials, the best one, leaderboard rows, the
Pareto front and the trial a ``--pick`` chooses.

"Best" always means among the *feasible* completed trials (every Optuna constraint value <= 0; a study
without caps has no constraints, so every trial is feasible), by the study's primary objective (its
first accuracy objective; see :mod:`dhns_search.search.objectives`).  The front and the picks are the pure
functions of :mod:`dhns_search.search.pareto` applied to the feasible completed trials.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dhns_search.errors import StudyError
from dhns_search.search import pareto
from dhns_search.search.objectives import (
    ObjectiveSpec,
    describe,
    is_feasible,
    primary_index,
    resolve,
    study_caps,
    study_objectives,
    violations,
)

__all__ = [
    "MEASURES",
    "Front",
    "LeaderRow",
    "best_trial",
    "completed",
    "infeasible",
    "leaderboard",
    "no_trial_message",
    "param_names",
    "pareto_front",
    "pick_trial",
    "primary_value",
    "state_counts",
    "trial_measures",
    "violation_text",
]

#: measurements shown next to the objectives (user attributes of every trial that trained)
MEASURES = ("epoch_seconds", "train_seconds", "peak_memory_mb")


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), every state listed."""
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                  TrialState.RUNNING, TrialState.WAITING)}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _finite(trial: FrozenTrial) -> bool:
    return trial.values is not None and all(v is not None and math.isfinite(v) for v in trial.values)


def completed(study: optuna.Study, *, feasible: bool | None = True) -> list[FrozenTrial]:
    """Completed trials with finite values, best first by the primary objective (ties: lower number).

    ``feasible`` True (default): only feasible trials (see the module docstring); False: only the
    infeasible ones; None: all.
    """
    specs = study_objectives(study)
    k = primary_index(specs)
    sign = 1.0 if specs[k].direction == "maximize" else -1.0
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _finite(t)]
    if feasible is not None:
        trials = [t for t in trials if is_feasible(t) == feasible]
    return sorted(trials, key=lambda t: (-sign * t.values[k], t.number))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best feasible completed trial by the primary objective (None before the first)."""
    best = completed(study)
    return best[0] if best else None


def primary_value(trial: FrozenTrial, specs: Sequence[ObjectiveSpec]) -> float:
    """The value of the primary objective of ``specs`` (the study's objectives) for ``trial``."""
    return float(trial.values[primary_index(specs)])


def infeasible(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that violate a cap, best first by the primary objective."""
    return completed(study, feasible=False)


def trial_measures(trial: FrozenTrial) -> dict[str, float]:
    """The :data:`MEASURES` a trial recorded."""
    return {k: float(trial.user_attrs[k]) for k in MEASURES if isinstance(trial.user_attrs.get(k), (int, float))}


def violation_text(study: optuna.Study, trial: FrozenTrial) -> str:
    """``epoch_seconds 0.41 > 0.2`` for each violated cap of ``trial``."""
    caps = study_caps(study)
    parts = []
    for name, excess in violations(trial).items():
        cap = caps.get(name)
        measured = trial.user_attrs.get(name)
        if cap is not None and isinstance(measured, (int, float)):
            parts.append(f"{name} {measured:.4g} > {cap:g}")
        else:
            parts.append(f"{name} over its cap by {excess:.4g}")
    return ", ".join(parts)


def completed_where(study: optuna.Study, where: Mapping[str, Any] | None) -> list[FrozenTrial]:
    """The feasible completed trials, best first, whose parameters have the values of ``where``
    (parameter name -> value, e.g. ``{"dhns.enabled": False}`` for a campaign's best uniform trial).

    Values compare as the study stores them, with YAML's spellings of booleans and numbers accepted
    (``"false"``, ``"1e-3"``); a trial in which a conditional parameter was not sampled does not match it.
    A name that is no parameter of the study is an error (a misspelt filter must not silently match nothing).
    """
    trials = completed(study)
    if not where:
        return trials
    names = {n for t in study.get_trials(deepcopy=False) for n in t.params}
    unknown = sorted(k for k in where if k not in names)
    if unknown:
        raise StudyError(f"where {', '.join(unknown)}: not a parameter of study {study.study_name!r} (its parameters: "
                         f"{', '.join(sorted(names)) or 'none'})")
    return [t for t in trials if all(k in t.params and _same_value(t.params[k], v) for k, v in where.items())]


def _same_value(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and not isinstance(stored, str):
        import yaml

        try:
            wanted = yaml.safe_load(wanted)
        except yaml.YAMLError:
            return False
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if isinstance(stored, (int, float)) and isinstance(wanted, (int, float)):
        return math.isclose(float(stored), float(wanted), rel_tol=1e-9, abs_tol=0.0)
    return stored == wanted


def no_trial_message(study: optuna.Study) -> str:
    """Why there is no feasible completed trial to export (the caps it breaks, or the state counts)."""
    bad = infeasible(study)
    if bad:
        caps = ", ".join(f"{n} <= {v:g}" for n, v in study_caps(study).items())
        shown = "; ".join(f"trial {t.number}: {violation_text(study, t)}" for t in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        return (f"study {study.study_name!r} has no feasible completed trial to export: all {len(bad)} completed "
                f"trials break the caps ({caps}): {shown}{more}")
    counts = ", ".join(f"{k.lower()} {v}" for k, v in state_counts(study).items() if v)
    return f"study {study.study_name!r} has no completed trial to export ({counts or 'no trials'})"


# ------------------------------------------------------------------------------------ leaderboard
@dataclass
class LeaderRow:
    rank: int
    number: int
    value: float  # the primary objective
    best_epoch: int | None
    seed: int | None
    seconds: float | None
    params: dict[str, Any] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)  # objective name -> value (every objective)
    measures: dict[str, float] = field(default_factory=dict)  # epoch_seconds, train_seconds, peak_memory_mb


def param_names(rows: Sequence[Any]) -> list[str]:
    """Every parameter name of ``rows`` (leaderboard or front rows: anything with ``params``), in order
    of first appearance."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r.params if k not in names]
    return names


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def leaderboard(study: optuna.Study, top: int | None = None) -> list[LeaderRow]:
    """The best feasible completed trials, best first by the primary objective."""
    specs = study_objectives(study)
    rows = []
    for rank, t in enumerate(completed(study)[: top if top else None], start=1):
        rows.append(LeaderRow(
            rank=rank,
            number=t.number,
            value=primary_value(t, specs),
            best_epoch=t.user_attrs.get("best_epoch"),
            seed=t.user_attrs.get("seed"),
            seconds=_duration(t),
            params=dict(t.params),
            values={s.name: float(v) for s, v in zip(specs, t.values or [])},
            measures=trial_measures(t),
        ))
    return rows


# ---------------------------------------------------------------------------------- Pareto front
@dataclass
class Front:
    """The Pareto front of a study's feasible completed trials (in trial-number order)."""

    objectives: list[ObjectiveSpec]
    trials: list[FrozenTrial]
    knee: int | None  # index into ``trials`` (None: empty front)
    n_feasible: int  # feasible completed trials the front was taken from

    @property
    def directions(self) -> list[str]:
        return [s.direction for s in self.objectives]

    def points(self) -> list[list[float]]:
        return [[float(v) for v in t.values] for t in self.trials]

    @property
    def knee_trial(self) -> FrozenTrial | None:
        return None if self.knee is None else self.trials[self.knee]

    def best_trial(self, objective: int) -> FrozenTrial:
        return self.trials[pareto.best(self.points(), self.directions, objective)]


def pareto_front(study: optuna.Study) -> Front:
    """The front of the feasible completed trials (what Optuna's ``study.best_trials`` returns too)."""
    specs = study_objectives(study)
    feasible = sorted(completed(study), key=lambda t: t.number)
    points = [[float(v) for v in t.values] for t in feasible]
    dirs = [s.direction for s in specs]
    idx = pareto.non_dominated(points, dirs) if points else []
    trials = [feasible[i] for i in idx]
    knee = pareto.knee([points[i] for i in idx], dirs) if idx and len(specs) > 1 else (0 if idx else None)
    return Front(objectives=specs, trials=trials, knee=knee, n_feasible=len(feasible))


def _objective_index(specs: list[ObjectiveSpec], written: str) -> int:
    word = written.strip().lower()
    for i, s in enumerate(specs):
        if word in (s.name.lower(), s.label.lower()):
            return i
    metric = next((s.name for s in specs if s.kind == "accuracy"), "mrr_realistic_filtered")
    try:
        name = resolve(written, metric).name
    except Exception:  # noqa: BLE001 - not an objective name at all: the message below says what is
        name = None
    for i, s in enumerate(specs):
        if s.name == name:
            return i
    raise StudyError(f"--pick best-{written}: the study's objectives are {describe(specs)}; use "
                     + " or ".join(f"best-{s.label}" for s in specs))


def pick_trial(study: optuna.Study, pick: pareto.Pick | str, where: Mapping[str, Any] | None = None) -> FrozenTrial:
    """The trial that ``pick`` chooses among the feasible completed trials (see :mod:`.pareto`); ``where``
    (single-objective studies) restricts them to those with the given parameter values (:func:`completed_where`)."""
    if isinstance(pick, str):
        pick = pareto.parse_pick(pick)
    specs = study_objectives(study)
    if not completed(study):
        raise StudyError(no_trial_message(study))
    if where:
        if len(specs) > 1:
            raise StudyError(f"study {study.study_name!r} has several objectives: a parameter filter (where) picks "
                             "among the best trials of a single-objective study only")
        if pick.kind != "best":
            raise StudyError(f"--pick {pick}: a parameter filter (where) works with --pick best only")
        matching = completed_where(study, where)
        if not matching:
            shown = ", ".join(f"{k}={v}" for k, v in where.items())
            raise StudyError(f"study {study.study_name!r} has no feasible completed trial with {shown}")
        return matching[0]
    if pick.kind == "best":
        k = primary_index(specs) if pick.objective is None else _objective_index(specs, pick.objective)
        if len(specs) == 1:
            return completed(study)[0]
        return pareto_front(study).best_trial(k)
    if len(specs) == 1:
        raise StudyError(
            f"--pick {pick}: study {study.study_name!r} has a single objective ({describe(specs)}), so there is "
            f"no trade-off to pick from; use --pick best-{specs[0].label} or --top K (a multi-objective study is "
            "made with dhns-search run --objective mrr,epoch_seconds)"
        )
    front = pareto_front(study)
    if pick.kind == "knee":
        assert front.knee_trial is not None
        return front.knee_trial
    # fastest-within D
    acc = primary_index(specs)
    cost = next((i for i, s in enumerate(specs) if s.kind == "cost"), None)
    if cost is None:
        raise StudyError(f"--pick {pick}: study {study.study_name!r} has no cost objective ({describe(specs)}); "
                         "fastest-within needs one such as epoch_seconds")
    i = pareto.fastest_within(front.points(), front.directions, accuracy=acc, cost=cost, delta=float(pick.delta))
    return front.trials[i]
