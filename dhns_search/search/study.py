"""Running a study: storage URLs, samplers and pruners, seeds, the live table, and status reports.

:func:`run_study` does all of ``dhns-search run``:

1. load and validate the space (and ``--set`` overrides, ``--enqueue`` files) before anything starts;
2. load the dataset once (unless the space searches ``data.*``);
3. create the study, or continue it when the name exists in the storage: the study's seed, objectives
   (``--objective``, one direction each) and caps (``--max-*``) are fixed when it is created, trial
   numbers continue, the sampler's seed is derived from the study seed and the number of trials already
   there (so a continued study does not replay the same random start); a multi-objective study runs
   without a pruner (Optuna's pruners compare one value);
4. open the MLflow parent run (found again by tags), warm-start trials from ``--enqueue`` files;
5. optimise with the live table; failed trials are recorded and the study goes on;
6. log the leaderboard, the best config and plots to the parent and end it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dhns_search.config.io import read_preset, read_yaml
from dhns_search.errors import ConfigError, StudyError
from dhns_search.search.export import (
    Front,
    LeaderRow,
    completed,
    config_text,
    infeasible,
    leaderboard,
    leaderboard_csv,
    leaderboard_markdown,
    pareto_front,
    state_counts,
    trial_config,
    violation_text,
)
from dhns_search.search.mlflow_bridge import DEFAULT_TRACKING_URI, MlflowBridge, prepare_tracking_uri
from dhns_search.search.objective import Objective, TrialFailed
from dhns_search.search.objectives import (
    CAPS,
    ObjectiveSpec,
    check_caps,
    describe,
    is_feasible,
    parse_objectives,
    primary_index,
    specs_to_attr,
    study_caps,
    study_objectives,
)
from dhns_search.search.space import SearchSpace, format_value, load_space

__all__ = [
    "DEFAULT_N_TRIALS",
    "DEFAULT_SPACE",
    "DEFAULT_STUDIES_DIR",
    "PRUNERS",
    "SAMPLERS",
    "RunOptions",
    "StudyInfo",
    "StudyReport",
    "StudySummary",
    "dashboard_command",
    "default_storage",
    "list_studies",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "resolve_pruner",
    "run_study",
    "study_report",
    "ui_command",
]

DEFAULT_SPACE = Path("spaces/default.yaml")
DEFAULT_STUDIES_DIR = Path("studies")
#: trials of a bare ``dhns-search run`` (neither --n-trials nor --timeout given)
DEFAULT_N_TRIALS = 12
SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc", "nsga2")
#: samplers that handle several objectives (CMA-ES raises for a multi-objective study)
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "gp", "random", "qmc")
#: samplers that steer away from infeasible trials (they read ``trial.constraints``); the others only
#: record feasibility
CONSTRAINED_SAMPLERS = ("tpe", "nsga2", "gp")
PRUNERS = ("median", "hyperband", "successive-halving", "percentile", "none")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ------------------------------------------------------------------------------------- helpers
def derive_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed from ``seed`` and labels (sampler seeds and the like)."""
    text = "/".join(["dhns-search", str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def check_study_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"study name {name!r}: use letters, digits, '.', '_' and '-' (it names files)")
    return name


def default_storage(study: str, root: Path = DEFAULT_STUDIES_DIR) -> str:
    """``sqlite:///studies/<study>.db`` (relative to the working directory)."""
    return f"sqlite:///{(root / f'{study}.db').as_posix()}"


def display_url(url: str) -> str:
    """A storage URL with its password hidden (safe to print and to store as a tag)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL
        return url


def make_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for any URL.  SQL databases get heartbeats, so that trials of a crashed
    process are marked FAIL by the next run instead of staying RUNNING forever.

    ``create=False`` (reading: status, export) refuses a SQLite file that does not exist, rather than
    leaving an empty database behind."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            if not create and not Path(path).is_file():
                raise StudyError(f"storage {display_url(url)}: no such database file {path}")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if re.match(r"^(sqlite|postgresql|mysql|oracle|mssql)(\+\w+)?://", url):
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs = {"connect_args": {"timeout": 60}}  # several workers may share one file
        else:
            kwargs = {"pool_pre_ping": True}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60,
                                                  grace_period=180)
        except Exception as err:  # noqa: BLE001 - driver missing, server down, bad URL ...
            raise StudyError(f"storage {display_url(url)}: {type(err).__name__}: {err}") from None
    raise StudyError(
        f"storage {display_url(url)}: not a supported URL; use sqlite:///PATH.db or a database URL such as "
        "postgresql+psycopg://USER@HOST:5432/DB"
    )


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler by name (see :data:`SAMPLERS`).

    ``gp`` (Gaussian process) needs scipy and torch, which are installed; ``cmaes`` needs the ``cmaes``
    package.  CMA-ES and QMC sample only numeric parameters jointly; categorical and conditional ones are
    drawn by the independent (random) sampler.  ``nsga2`` is Optuna's NSGA-II (population 50: the first
    50 trials are random), for multi-objective studies; TPE (the default) handles them too.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # multivariate + group: TPE models the parameters that occur together (conditional spaces)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ModuleNotFoundError:
                raise ConfigError("--sampler cmaes needs the 'cmaes' package: pip install cmaes") from None
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if name == "gp":
            try:
                import scipy  # noqa: F401
                import torch  # noqa: F401
            except ModuleNotFoundError as err:
                raise ConfigError(f"--sampler gp needs {err.name}: pip install {err.name}") from None
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False,
                                              warn_asynchronous_seeding=False)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def check_sampler(name: str, specs: Sequence[ObjectiveSpec]) -> None:
    """Refuse a sampler that cannot handle the study's number of objectives."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if len(specs) > 1 and name not in MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"--sampler {name} optimises a single objective; for the objectives {describe(specs)} "
                          f"use {', '.join(MULTI_OBJECTIVE_SAMPLERS)} (tpe is the default)")


def resolve_pruner(requested: str | None, specs: Sequence[ObjectiveSpec]) -> str:
    """The pruner a study runs with: ``median`` by default, ``none`` for a multi-objective study
    (Optuna's ``trial.report`` / ``should_prune`` do not support several objectives)."""
    if requested is not None and requested not in PRUNERS:
        raise ConfigError(f"unknown pruner {requested!r}; choose one of {', '.join(PRUNERS)}")
    if len(specs) > 1:
        if requested not in (None, "none"):
            raise ConfigError(f"--pruner {requested}: Optuna's pruners compare one value, and this study has "
                              f"{len(specs)} objectives ({describe(specs)}); every trial runs to the end. Leave "
                              "--pruner out (or use --pruner none)")
        return "none"
    return requested or "median"


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """A pruner by name (see :data:`PRUNERS`); steps are epochs."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=5)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


# ------------------------------------------------------------------------------- finding studies
def _sqlite_files(root: Path = DEFAULT_STUDIES_DIR) -> list[Path]:
    return sorted(root.glob("*.db")) if root.is_dir() else []


def _names_in(url: str) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.study.get_all_study_names(storage=make_storage(url, create=False))
    except Exception:  # noqa: BLE001 - not an Optuna database, or unreachable
        return []


def _known(storage: str | None) -> list[tuple[str, str]]:
    if storage is not None:
        return [(n, storage) for n in _names_in(storage)]
    out = []
    for path in _sqlite_files():
        url = f"sqlite:///{path.as_posix()}"
        out += [(n, url) for n in _names_in(url)]
    return out


def open_study(name: str, storage: str | None = None) -> tuple[optuna.Study, str]:
    """Load an existing study: from ``storage``, else ``studies/<name>.db``, else any ``studies/*.db``.

    Raises :class:`StudyError` naming the known studies when there is none of that name.
    """
    candidates = [storage] if storage else []
    if storage is None:
        default = DEFAULT_STUDIES_DIR / f"{name}.db"
        if default.is_file():
            candidates.append(default_storage(name))
        candidates += [u for n, u in _known(None) if n == name and u not in candidates]
    for url in candidates:
        if name in _names_in(url):
            return optuna.load_study(study_name=name, storage=make_storage(url, create=False)), url
    known = _known(storage)
    where = display_url(storage) if storage else f"{DEFAULT_STUDIES_DIR}/*.db"
    listing = ", ".join(f"{n} ({display_url(u)})" if storage is None else n for n, u in known) or "none"
    raise StudyError(f"no study {name!r} in {where}; known studies: {listing}")


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
    """Every study in ``storage`` (default: every ``studies/*.db``)."""
    out = []
    for name, url in _known(storage):
        study = optuna.load_study(study_name=name, storage=make_storage(url, create=False))
        trials = study.get_trials(deepcopy=False)
        specs = study_objectives(study)
        best = completed(study)
        k = primary_index(specs)
        starts = [t.datetime_start for t in trials if t.datetime_start]
        info = StudyInfo(
            name=name,
            storage=display_url(url),
            n_trials=len(trials),
            states=state_counts(study),
            best_value=best[0].values[k] if best else None,
            best_trial=best[0].number if best else None,
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

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1


def _front_rows(front: Front) -> list[FrontRow]:
    picks: dict[int, list[str]] = {}
    if front.knee_trial is not None:
        picks.setdefault(front.knee_trial.number, []).append("knee")
    if front.trials:
        for k, spec in enumerate(front.objectives):
            picks.setdefault(front.best_trial(k).number, []).append(f"best-{spec.label}")
    return [FrontRow(number=t.number, values={s.name: float(v) for s, v in zip(front.objectives, t.values)},
                     measures={k: float(t.user_attrs[k]) for k in ("epoch_seconds", "train_seconds", "peak_memory_mb")
                               if isinstance(t.user_attrs.get(k), (int, float))},
                     params=dict(t.params), picks=picks.get(t.number, []))
            for t in front.trials]


def study_report(name: str, storage: str | None = None, top: int = 10) -> StudyReport:
    """One study: state counts, objectives and caps, the best feasible trials (and, with several
    objectives, the Pareto front with its knee), the infeasible trials and the latest failures."""
    study, url = open_study(name, storage)
    attrs = study.user_attrs
    specs = study_objectives(study)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    bad = infeasible(study)
    k = primary_index(specs)
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
        infeasible=[(t.number, float(t.values[k]), violation_text(study, t)) for t in bad[:top]],
        n_infeasible=len(bad),
    )
    if len(specs) > 1:
        front = pareto_front(study)
        report.front = _front_rows(front)
        report.knee_trial = front.knee_trial.number if front.knee_trial else None
    return report


class _QuietFailedTrials(logging.Filter):
    """Drop Optuna's traceback for trials that failed with :class:`TrialFailed` (an expected outcome
    whose reason the live table and the ``fail_reason`` attribute already show)."""

    _VALUE = re.compile(r"^Trial (\d+) failed with value")
    _PARAMS = re.compile(r"^Trial (\d+) failed with parameters")

    def __init__(self) -> None:
        super().__init__()
        self.quiet: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            m = self._PARAMS.match(msg)
            if m:
                self.quiet.add(m.group(1))
            return False
        m = self._VALUE.match(msg)
        return not (m and m.group(1) in self.quiet)


@contextlib.contextmanager
def _quiet_failed_trials():
    logger = logging.getLogger("optuna.study._optimize")
    flt = _QuietFailedTrials()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


# ----------------------------------------------------------------------------------- live table
def short_names(names: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix that still tells the parameters apart (``train.lr`` -> ``lr``)."""
    out = {}
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            cand = ".".join(parts[-k:])
            if sum(1 for o in names if o == cand or o.endswith("." + cand)) == 1:
                out[name] = cand
                break
        else:
            out[name] = name
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return format_value(value)


_STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "INFEASIBLE": "magenta"}


class LiveTable:
    """Optuna callback that shows finished trials as they end.

    On a terminal: a live rich table (the last ``max_rows`` trials, the first ``max_params`` parameters in
    sampling order).  Elsewhere (logs, CI): one line per trial with every parameter.
    """

    def __init__(self, console: Console, study_name: str, param_names: Sequence[str], *, max_rows: int = 20,
                 max_params: int = 8, enabled: bool = True, objectives: Sequence[ObjectiveSpec] = ()) -> None:
        self.console = console
        self.study_name = study_name
        self.objectives = list(objectives)
        self.short = short_names(list(param_names))
        self.max_rows = max_rows
        self.max_params = max_params
        self.enabled = enabled
        self.rows: list[tuple[FrozenTrial, float | None]] = []
        self._live: Live | None = None

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        """Show the live table (on a terminal) while the block runs."""
        if not (self.enabled and self.console.is_terminal):
            yield
            return
        with Live(self.render(), console=self.console, refresh_per_second=4, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                live.update(self.render())
                self._live = None

    def _params(self, trial: FrozenTrial, limit: int | None = None) -> str:
        items = [f"{self.short.get(k, k)}={_fmt(v)}" for k, v in trial.params.items()]
        if limit is not None and len(items) > limit:
            items = items[:limit] + [f"(+{len(items) - limit} more)"]
        return "  ".join(items)

    def _value(self, trial: FrozenTrial) -> str:
        if not trial.values:
            return "-"
        if len(trial.values) == 1:
            return f"{trial.values[0]:.4f}"
        return ", ".join(f"{v:.4g}" for v in trial.values)

    @staticmethod
    def _state(trial: FrozenTrial) -> str:
        if trial.state == TrialState.COMPLETE and not is_feasible(trial):
            return "infeasible"
        return trial.state.name.lower()

    def render(self) -> Group:
        table = Table(title=f"study {self.study_name}", title_justify="left", expand=False)
        value_col = "value" if len(self.objectives) <= 1 else ", ".join(s.label for s in self.objectives)
        best_col = "best" if len(self.objectives) <= 1 else f"best {self.objectives[primary_index(self.objectives)].label}"
        for col, just in (("#", "right"), ("state", "left"), (value_col, "right"), (best_col, "right"),
                          ("time", "right"), ("params", "left")):
            table.add_column(col, justify=just, overflow="fold" if col == "params" else "ellipsis")
        for trial, best in self.rows[-self.max_rows :]:
            value = self._value(trial)
            if trial.state == TrialState.PRUNED and trial.intermediate_values:
                step = max(trial.intermediate_values)
                value = f"({trial.intermediate_values[step]:.4f}@{step})"
            secs = (trial.datetime_complete - trial.datetime_start).total_seconds() \
                if trial.datetime_complete and trial.datetime_start else None
            state = self._state(trial)
            table.add_row(
                str(trial.number),
                Text(state, style=_STATE_STYLE.get(state.upper(), "")),
                value,
                "-" if best is None else f"{best:.4f}",
                "-" if secs is None else f"{secs:.1f}s",
                self._params(trial, self.max_params),
            )
        hidden = len(self.rows) - self.max_rows
        parts: list[Any] = [table]
        if hidden > 0:
            parts.insert(0, Text(f"... {hidden} earlier trials of this run not shown", style="dim"))
        return Group(*parts)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        best = completed(study)
        k = primary_index(self.objectives) if self.objectives else 0
        self.rows.append((trial, best[0].values[k] if best else None))
        if not self.enabled:
            return
        if self._live is not None:
            self._live.update(self.render())
        else:
            reason = trial.user_attrs.get("fail_reason") if trial.state == TrialState.FAIL else None
            if self._state(trial) == "infeasible":
                reason = f"infeasible: {violation_text(study, trial)}"
            names = "" if len(self.objectives) <= 1 else f" ({', '.join(s.label for s in self.objectives)})"
            self.console.print(
                f"trial {trial.number}: {trial.state.name.lower()} value{names} {self._value(trial)} "
                f"best {'-' if not best else f'{best[0].values[k]:.4f}'}  {self._params(trial)}"
                + (f"  [{reason}]" if reason else ""),
                highlight=False, markup=False, soft_wrap=True,
            )


# ------------------------------------------------------------------------------------ run_study
@dataclass
class RunOptions:
    """Everything ``dhns-search run`` can be told (see its ``--help``)."""

    space: Path = DEFAULT_SPACE
    study: str | None = None
    n_trials: int | None = None
    timeout: float | None = None
    sampler: str = "tpe"
    #: None: ``median`` for one objective, ``none`` for several
    pruner: str | None = None
    storage: str | None = None
    #: MLflow tracking URI; None or "none" disables MLflow
    tracking_uri: str | None = DEFAULT_TRACKING_URI
    seed: int | None = None
    device: str | None = None
    enqueue: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    live: bool = True
    #: ``--objective``: e.g. "mrr,epoch_seconds"; None: the space's train.metric (or, continuing, the
    #: study's own objectives)
    objectives: str | None = None
    #: caps (None: none, or continuing, the study's own)
    max_epoch_seconds: float | None = None
    max_train_seconds: float | None = None
    max_memory_mb: float | None = None

    def caps(self) -> dict[str, float]:
        return check_caps({"epoch_seconds": self.max_epoch_seconds, "train_seconds": self.max_train_seconds,
                           "peak_memory_mb": self.max_memory_mb})


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
    from dhns_search.data import load_from_config

    cfg = space.check_overrides(options.overrides)
    return load_from_config(cfg.data)


def _caps_text(caps: dict[str, float]) -> str:
    return ", ".join(f"{CAPS[k]} {v:g}" for k, v in caps.items()) or "no caps"


def _prepare_study(name: str, storage: optuna.storages.BaseStorage, options: RunOptions, space: SearchSpace,
                   metric: str, specs: list[ObjectiveSpec] | None, caps: dict[str, float]
                   ) -> tuple[optuna.Study, int, list[ObjectiveSpec], dict[str, float]]:
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
    attrs = study.user_attrs
    if "dhns.uid" not in attrs:  # a new study: record what defines it
        chosen = specs or parse_objectives(None, metric)
        if [d.name.lower() for d in study.directions] != [s.direction for s in chosen]:
            raise StudyError(f"study {name!r} exists with {len(study.directions)} direction(s) but no dhns-search "
                             "attributes; use another --study name")
        seed = 0 if options.seed is None else options.seed
        study.set_user_attr("dhns.uid", uuid.uuid4().hex)
        study.set_user_attr("dhns.seed", seed)
        study.set_user_attr("dhns.space", str(space.path))
        study.set_user_attr("dhns.space_sha256", space.sha256)
        study.set_user_attr("dhns.metric", metric)
        study.set_user_attr("dhns.objectives", specs_to_attr(chosen))
        study.set_user_attr("dhns.caps", dict(caps))
        return study, seed, chosen, dict(caps)

    seed = int(attrs.get("dhns.seed", 0))
    if options.seed is not None and options.seed != seed:
        raise StudyError(
            f"study {name!r} was created with --seed {seed}; continue it with that seed "
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
    return study, seed, stored, stored_caps


def run_study(
    options: RunOptions,
    *,
    console: Console | None = None,
    trainer: Callable[..., Any] | None = None,
) -> StudySummary:
    """Run (or continue) a study as ``options`` say; returns its summary.  See the module docstring."""
    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    if options.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {options.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if options.pruner is not None:
        make_pruner(options.pruner)
    if options.n_trials is not None and options.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1 (got {options.n_trials})")
    if options.timeout is not None and options.timeout <= 0:
        raise ConfigError(f"--timeout must be positive (got {options.timeout})")
    if options.device is not None and options.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda (got {options.device!r})")
    caps = options.caps()

    # 1. everything the user wrote is validated before a study or run exists
    space = load_space(options.space, overrides=options.overrides)
    name = check_study_name(options.study or space.path.stem)  # type: ignore[union-attr]
    base_cfg = space.check_overrides(options.overrides)
    metric = base_cfg.train.metric
    requested = parse_objectives(options.objectives, metric) if options.objectives else None
    if requested is not None:
        check_sampler(options.sampler, requested)
        resolve_pruner(options.pruner, requested)
    _check_measurable(requested or [], caps, options.device)
    enqueued = _enqueue_sources(space, options.enqueue)
    n_trials = options.n_trials
    if n_trials is None and options.timeout is None:
        n_trials = DEFAULT_N_TRIALS

    # 2. the dataset, once
    dataset = _load_dataset(space, options)

    # 3. the study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_url = options.storage or default_storage(name)
    storage = make_storage(storage_url)
    study, seed, specs, caps = _prepare_study(name, storage, options, space, metric, requested, caps)
    check_sampler(options.sampler, specs)  # a continued study: its own objectives decide
    pruner_name = resolve_pruner(options.pruner, specs)
    _check_measurable(specs, caps, options.device)
    study.pruner = make_pruner(pruner_name)
    if isinstance(storage, optuna.storages.RDBStorage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # trials of a crashed process -> FAIL
    existing = len(study.get_trials(deepcopy=False))
    # Reproducible on SQLite (one worker); on a server database several workers may start together, so
    # each gets its own sampler seed (else they would propose the same start-up trials).
    worker = () if storage_url.startswith("sqlite") else (socket.gethostname(), os.getpid())
    study.sampler = make_sampler(options.sampler, derive_seed(seed, "sampler", existing, *worker))

    notes = []
    if len(specs) > 1:
        notes.append(f"{len(specs)} objectives ({describe(specs)}): pruning is off (Optuna's pruners compare one "
                     "value), every trial trains to the end")
    if caps:
        steer = ("the sampler avoids infeasible regions" if options.sampler in CONSTRAINED_SAMPLERS else
                 f"--sampler {options.sampler} does not use them when proposing trials (tpe, nsga2 and gp do)")
        notes.append(f"caps {_caps_text(caps)}: trials over a cap are kept but marked infeasible; {steer}")
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if study.user_attrs.get("dhns.space_sha256", space.sha256) != space.sha256:
        console.print(f"[yellow]note:[/] study {name!r} was created with another version of its space "
                      f"({study.user_attrs.get('dhns.space')}); earlier trials keep their own parameters",
                      highlight=False)

    # 4. MLflow parent run (RUNNING until the end, whatever happens), warm starts, the trials
    bridge = None
    tracking = options.tracking_uri if options.tracking_uri not in (None, "", "none") else None
    if tracking is not None:
        bridge = MlflowBridge(prepare_tracking_uri(tracking), name, study_uid=study.user_attrs["dhns.uid"])
        bridge.start_study({
            "dhns.space": str(space.path),
            "dhns.space_sha256": space.sha256,
            "dhns.sampler": options.sampler,
            "dhns.pruner": pruner_name,
            "dhns.seed": seed,
            "dhns.storage": display_url(storage_url),
            "dhns.metric": metric,
            "dhns.objectives": ",".join(f"{s.name}:{s.direction}" for s in specs),
            "dhns.caps": ",".join(f"{k}<={v:g}" for k, v in caps.items()),
            "dhns.overrides": " ".join(options.overrides),
        })
    new_trials: list[int] = []
    k = primary_index(specs)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        new_trials.append(trial.number)
        if bridge is not None:
            best = completed(study)
            counts = state_counts(study)
            metrics: dict[str, Any] = {f"n_{k.lower()}": v for k, v in counts.items()
                                       if k in ("COMPLETE", "PRUNED", "FAIL")}
            if caps:
                metrics["n_infeasible"] = len(infeasible(study))
            if best:
                metrics["best_value"] = best[0].values[primary_index(specs)]
            if len(specs) > 1:
                metrics["pareto_size"] = len(pareto_front(study).trials)
            bridge.log_parent_metrics(metrics, step=trial.number)

    live = LiveTable(console, name, space.names, enabled=options.live, objectives=specs)
    status = "FAILED"
    try:
        if bridge is not None:
            bridge.reconcile({t.number: t.state.name for t in study.get_trials(deepcopy=False)})
            if space.path is not None:
                bridge.log_parent_file(space.path)
        for values, source in enqueued:
            study.enqueue_trial(values, user_attrs={"enqueued_from": source}, skip_if_exists=True)
        objective = Objective(space, study_seed=seed, overrides=options.overrides, device=options.device,
                              bridge=bridge, dataset=dataset, trainer=trainer, objectives=specs, caps=caps)
        with live.shown(), _quiet_failed_trials(), warnings.catch_warnings():
            # CMA-ES says so after every constrained trial; the note above said it once
            warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler")
            study.optimize(objective, n_trials=n_trials, timeout=options.timeout, catch=(TrialFailed,),
                           callbacks=[after_trial, live])
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        plots = _finish(study, bridge, status)

    best = completed(study)
    summary = StudySummary(
        study=name,
        storage=display_url(storage_url),
        tracking_uri=tracking,
        experiment_id=bridge.experiment_id if bridge else None,
        parent_run_id=bridge.parent_run_id if bridge else None,
        seed=seed,
        metric=metric,
        states=state_counts(study),
        n_trials=len(study.get_trials(deepcopy=False)),
        new_trials=new_trials,
        best_value=best[0].values[k] if best else None,
        best_trial=best[0].number if best else None,
        best_params=dict(best[0].params) if best else {},
        seconds=time.perf_counter() - t0,
        plots=plots[0],
        plots_skipped=plots[1],
        objectives=specs,
        caps=caps,
        pruner=pruner_name,
        n_infeasible=len(infeasible(study)),
        notes=notes,
    )
    if len(specs) > 1:
        front = pareto_front(study)
        summary.front = [(t.number, [float(v) for v in t.values]) for t in front.trials]
        summary.knee_trial = front.knee_trial.number if front.knee_trial else None
    return summary


def _check_measurable(specs: Sequence[ObjectiveSpec], caps: dict[str, float], device: str | None) -> None:
    """Refuse a memory objective or cap where this machine cannot measure memory."""
    from dhns_search.search.resources import memory_kind

    wants = any(s.name == "peak_memory_mb" for s in specs) or "peak_memory_mb" in caps
    if wants and device in (None, "auto", "cpu") and memory_kind(cuda=False) == "unavailable":
        raise ConfigError("peak_memory_mb: this platform has neither /proc nor the resource module, so the "
                          "memory of a CPU trial cannot be measured; drop peak_memory_mb / --max-memory-mb")


def _finish(study: optuna.Study, bridge: MlflowBridge | None, status: str) -> tuple[list[str], dict[str, str]]:
    """Leaderboard, best config and plots onto the parent run, then end it (``status``).

    Nothing here may hide the study's own outcome: a failure to log an artifact is reported in the
    returned ``skipped`` mapping, and the parent run is ended in any case.  A multi-objective study's
    ``best_config.yaml`` is its knee (see :mod:`dhns_search.search.pareto`).
    """
    if bridge is None:
        return [], {}
    from dhns_search.search.plots import write_plots

    files: list[str] = []
    skipped: dict[str, str] = {}
    try:
        specs = study_objectives(study)
        rows = leaderboard(study)
        bridge.log_parent_text(leaderboard_csv(rows), "leaderboard.csv")
        label = specs[primary_index(specs)].name if len(specs) > 1 else study.user_attrs.get("dhns.metric", "value")
        bridge.log_parent_text(leaderboard_markdown(rows, metric=label), "leaderboard.md")
        best = completed(study)
        tags: dict[str, Any] = {"dhns.n_trials": len(study.get_trials(deepcopy=False))}
        if best:
            tags.update({"dhns.best_value": repr(best[0].values[primary_index(specs)]),
                         "dhns.best_trial": best[0].number})
            if len(specs) > 1:
                front = pareto_front(study)
                knee = front.knee_trial
                assert knee is not None
                bridge.log_parent_text(config_text(trial_config(study, knee, pick="knee")), "best_config.yaml")
                tags.update({"dhns.knee_trial": knee.number,
                             "dhns.pareto_trials": ",".join(str(t.number) for t in front.trials)})
            else:
                bridge.log_parent_text(config_text(trial_config(study, best[0])), "best_config.yaml")
        bridge.set_parent_tags(tags)
        tmp = Path(tempfile.mkdtemp(prefix="dhns-plots-"))
        try:
            result = write_plots(study, tmp)
            bridge.log_parent_files(result.files, "plots")
            files = [f"plots/{p.name}" for p in result.files]
            skipped = result.skipped
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception as err:  # noqa: BLE001 - report, and still end the parent below
        skipped["artifacts"] = f"{type(err).__name__}: {err}"
    finally:
        others_running = status == "FINISHED" and any(
            t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)
        )
        if not others_running:  # another worker still runs trials of this study: it ends the parent
            bridge.end_study(status)
    return files, skipped


# ------------------------------------------------------------------------------------------ ui
def ui_command(tracking_uri: str = DEFAULT_TRACKING_URI, *, port: int = 5000, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow ui`` command line for the project's tracking store."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///") :])
        if not path.is_file():
            raise StudyError(f"no MLflow tracking store at {path}; run dhns-search run first")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port)]


def dashboard_command(storage: str) -> str:
    """How to open optuna-dashboard on a study's storage (it is an optional extra)."""
    return f"optuna-dashboard {display_url(storage)}"

