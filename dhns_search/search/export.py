"""Leaderboards and standalone configs of the best trials.

An exported config is a complete :class:`~dhns_search.config.models.RunConfig` that
``dhns-search train --config FILE`` replays as is: the trial's resolved configuration with
``train.epochs`` set to the trial's best epoch, the trial's seed, ``train.test: true``, and a
``provenance`` section (study, trial, validation metric and value, package versions, dataset
fingerprint; for a multi-objective study also the objective values and the ``--pick`` that chose it).
On CPU the replay reproduces the trial's validation metric exactly.

"Best" always means among the *feasible* completed trials (every Optuna constraint value <= 0; a
study without caps has no constraints, so every trial is feasible), by the study's primary objective
(its first accuracy objective).  A multi-objective study is exported by a pick from its Pareto front
(:func:`pick_trial`, with the definitions of :mod:`dhns_search.search.pareto`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dhns_search.config.io import dump_yaml, validate_config
from dhns_search.config.models import RunConfig
from dhns_search.errors import StudyError
from dhns_search.files import atomic_write_text
from dhns_search.search import pareto
from dhns_search.search.objectives import (
    ObjectiveSpec,
    describe,
    is_feasible,
    primary_index,
    study_caps,
    study_objectives,
    violations,
)
from dhns_search.search.space import format_value

__all__ = [
    "Front",
    "LeaderRow",
    "completed",
    "export_best",
    "export_trials",
    "infeasible",
    "leaderboard",
    "leaderboard_csv",
    "leaderboard_markdown",
    "package_versions",
    "pareto_front",
    "pick_trial",
    "primary_value",
    "state_counts",
    "trial_config",
    "trial_values",
    "violation_text",
]

#: measurements shown next to the objectives (user attributes of every trial that trained)
MEASURES = ("epoch_seconds", "train_seconds", "peak_memory_mb")


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


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), every state listed."""
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                  TrialState.RUNNING, TrialState.WAITING)}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The sampled Optuna values of a trial, by parameter name."""
    return dict(trial.params)


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def _finite(trial: FrozenTrial) -> bool:
    return trial.values is not None and all(v is not None and math.isfinite(v) for v in trial.values)


def primary_value(study: optuna.Study, trial: FrozenTrial) -> float:
    """The value of the study's primary objective (its first accuracy objective) for ``trial``."""
    return float(trial.values[primary_index(study_objectives(study))])


def trial_values(specs: list[ObjectiveSpec], trial: FrozenTrial) -> dict[str, float]:
    """Objective name -> value of a completed trial."""
    return {s.name: float(v) for s, v in zip(specs, trial.values or [])}


def _measures(trial: FrozenTrial) -> dict[str, float]:
    return {k: float(trial.user_attrs[k]) for k in MEASURES if isinstance(trial.user_attrs.get(k), (int, float))}


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


def infeasible(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that violate a cap, best first by the primary objective."""
    return completed(study, feasible=False)


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


def leaderboard(study: optuna.Study, top: int | None = None) -> list[LeaderRow]:
    """The best feasible completed trials, best first by the primary objective."""
    specs = study_objectives(study)
    k = primary_index(specs)
    rows = []
    for rank, t in enumerate(completed(study)[: top if top else None], start=1):
        rows.append(LeaderRow(
            rank=rank,
            number=t.number,
            value=float(t.values[k]),
            best_epoch=t.user_attrs.get("best_epoch"),
            seed=t.user_attrs.get("seed"),
            seconds=_duration(t),
            params=trial_params(t),
            values=trial_values(specs, t),
            measures=_measures(t),
        ))
    return rows


# ----------------------------------------------------------------------------------- Pareto front
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


def _no_trial_message(study: optuna.Study) -> str:
    bad = infeasible(study)
    if bad:
        caps = ", ".join(f"{n} <= {v:g}" for n, v in study_caps(study).items())
        shown = "; ".join(f"trial {t.number}: {violation_text(study, t)}" for t in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        return (f"study {study.study_name!r} has no feasible completed trial to export: all {len(bad)} completed "
                f"trials break the caps ({caps}): {shown}{more}")
    counts = ", ".join(f"{k.lower()} {v}" for k, v in state_counts(study).items() if v)
    return f"study {study.study_name!r} has no completed trial to export ({counts or 'no trials'})"


def _objective_index(specs: list[ObjectiveSpec], written: str) -> int:
    from dhns_search.search.objectives import resolve

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


def pick_trial(study: optuna.Study, pick: pareto.Pick | str) -> FrozenTrial:
    """The trial that ``pick`` chooses among the feasible completed trials (see :mod:`.pareto`)."""
    if isinstance(pick, str):
        pick = pareto.parse_pick(pick)
    specs = study_objectives(study)
    if not completed(study):
        raise StudyError(_no_trial_message(study))
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


def _param_names(rows: list[LeaderRow]) -> list[str]:
    names: list[str] = []
    for r in rows:
        names += [k for k in r.params if k not in names]
    return names


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return format_value(value)


def _value_columns(rows: list[LeaderRow]) -> list[str]:
    """The objectives (when there are several) and the measurements present in any row."""
    names: list[str] = []
    for r in rows:
        if len(r.values) > 1:
            names += [k for k in r.values if k not in names]
    for r in rows:
        names += [k for k in r.measures if k not in names]
    return names


def _number(row: LeaderRow, name: str) -> float | None:
    value = row.values.get(name) if len(row.values) > 1 and name in row.values else row.measures.get(name)
    return None if value is None else float(value)


def leaderboard_csv(rows: list[LeaderRow]) -> str:
    names = _param_names(rows)
    extra = _value_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "trial", "value", "best_epoch", "seed", "seconds", *extra, *names])
    for r in rows:
        writer.writerow([r.rank, r.number, repr(r.value), r.best_epoch, r.seed,
                         "" if r.seconds is None else f"{r.seconds:.1f}",
                         *("" if (v := _number(r, n)) is None else repr(v) for n in extra),
                         *("" if n not in r.params else _cell(r.params[n]) for n in names)])
    return buf.getvalue()


def leaderboard_markdown(rows: list[LeaderRow], *, metric: str = "value") -> str:
    names = _param_names(rows)
    extra = _value_columns(rows)
    head = ["rank", "trial", metric, "best epoch", "seconds", *extra, *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r.rank), str(r.number), f"{r.value:.4f}", str(r.best_epoch),
                 "" if r.seconds is None else f"{r.seconds:.1f}",
                 *("" if (v := _number(r, n)) is None else f"{v:.4g}" for n in extra),
                 *("" if n not in r.params else _cell(r.params[n]) for n in names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def package_versions() -> dict[str, str]:
    out = {}
    for dist in ("dhns-search", "torch", "optuna"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def trial_config(study: optuna.Study, trial: FrozenTrial, *, pick: str | None = None) -> RunConfig:
    """The standalone training configuration that replays ``trial`` (see the module docstring);
    ``pick`` (e.g. ``"knee"``) is recorded in the provenance."""
    data = trial.user_attrs.get("config")
    if not isinstance(data, dict):
        raise StudyError(f"study {study.study_name!r}, trial {trial.number}: no resolved configuration was "
                         "recorded (was it run by dhns-search run?)")
    data = dict(data)
    train = dict(data.get("train", {}))
    best_epoch = trial.user_attrs.get("best_epoch")
    if isinstance(best_epoch, int) and best_epoch > 0:
        train["epochs"] = best_epoch
    train["test"] = True
    train["progress"] = True  # display only; the search turned it off
    data["train"] = train
    if "seed" in trial.user_attrs:
        data["seed"] = trial.user_attrs["seed"]
    versions = package_versions()
    metric = train.get("metric", "mrr_realistic_filtered")
    specs = study_objectives(study)
    best_valid = trial.user_attrs.get("best_valid")
    if isinstance(best_valid, dict) and isinstance(best_valid.get(metric), (int, float)):
        valid_value: float | None = float(best_valid[metric])
    elif trial.values:
        valid_value = float(trial.values[primary_index(specs)])
    else:
        valid_value = None
    data["provenance"] = {
        "study": study.study_name,
        "trial": trial.number,
        "valid_metric": metric,
        "valid_value": valid_value,
        "best_epoch": best_epoch if isinstance(best_epoch, int) else None,
        "dataset_fingerprint": trial.user_attrs.get("dataset_fingerprint"),
        "dhns_search_version": versions["dhns-search"],
        "torch_version": versions["torch"],
        "optuna_version": versions["optuna"],
    }
    if len(specs) > 1 and trial.values:
        data["provenance"]["objectives"] = ", ".join(
            f"{s.name}={v!r} ({s.arrow})" for s, v in zip(specs, trial.values))
    if pick is not None:
        data["provenance"]["pick"] = str(pick)
    return validate_config(data, f"study {study.study_name!r}, trial {trial.number}")


def _header(cfg: RunConfig) -> str:
    p = cfg.provenance or {}
    lines = [f"# Exported by dhns-search from study {p.get('study')!r}, trial {p.get('trial')}"
             + (f", chosen by --pick {p['pick']}" if p.get("pick") else "") + ":",
             f"# validation {p.get('valid_metric')} = {p.get('valid_value')} at epoch {p.get('best_epoch')}."]
    if p.get("objectives"):
        lines.append(f"# objectives: {p['objectives']}")
    lines.append("# Replay it with:  dhns-search train --config THIS_FILE")
    return "\n".join(lines) + "\n"


def write_config(cfg: RunConfig, path: Path) -> Path:
    return atomic_write_text(path, config_text(cfg))


def config_text(cfg: RunConfig) -> str:
    return _header(cfg) + dump_yaml(cfg)


def _is_dir_target(out: str | Path) -> bool:
    text = str(out)
    return Path(out).is_dir() or text.endswith(("/", "\\"))


def export_trials(study: optuna.Study, *, top: int | None = None, out: str | Path | None = None,
                  pick: pareto.Pick | str | None = None) -> list[tuple[Path, RunConfig]]:
    """Write the configs of the ``top`` best feasible trials, or of the one trial ``pick`` chooses;
    returns ``(path, config)`` best first.

    Neither given: the best trial of a single-objective study, the knee of a multi-objective one.
    ``out`` None: ``exports/<study>-trial<N>.yaml``.  ``out`` an existing directory or a path ending in
    ``/``: ``<out>/<study>-trial<N>.yaml``.  Otherwise, with one trial that exact file; with
    ``top`` > 1 the rank is added before the suffix (``best.yaml`` -> ``best-1.yaml``, ``best-2.yaml``).
    """
    if top is not None and top < 1:
        raise StudyError(f"--top must be at least 1 (got {top})")
    if pick is not None and top is not None:
        raise StudyError("--pick chooses one trial and --top the K best by the primary objective: give one of them")
    if isinstance(pick, str):
        pick = pareto.parse_pick(pick)
    if pick is None and top is None and len(study_objectives(study)) > 1:
        pick = pareto.Pick("knee")
    if pick is not None:
        chosen = [pick_trial(study, pick)]
        top = 1
    else:
        top = top or 1
        chosen = completed(study)[:top]
        if not chosen:
            raise StudyError(_no_trial_message(study))
    written = []
    for rank, trial in enumerate(chosen, start=1):
        cfg = trial_config(study, trial, pick=None if pick is None else str(pick))
        default_name = f"{study.study_name}-trial{trial.number}.yaml"
        if out is None:
            path = Path("exports") / default_name
        elif _is_dir_target(out):
            path = Path(out) / default_name
        else:
            out_path = Path(out)
            path = out_path if top == 1 else out_path.with_name(f"{out_path.stem}-{rank}{out_path.suffix or '.yaml'}")
        written.append((write_config(cfg, path), cfg))
    return written


def export_best(study_name: str, *, storage: str | None = None, top: int | None = None,
                out: str | Path | None = None, pick: pareto.Pick | str | None = None) -> list[tuple[Path, RunConfig]]:
    """Open ``study_name`` (see :func:`dhns_search.search.study.open_study`) and export its best trials
    (or the trial ``pick`` chooses; see :func:`export_trials`)."""
    from dhns_search.search.study import open_study

    if isinstance(pick, str):
        pick = pareto.parse_pick(pick)  # a bad --pick is reported before the study is opened
    study, _ = open_study(study_name, storage)
    return export_trials(study, top=top, out=out, pick=pick)
