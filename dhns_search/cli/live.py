"""What ``dhns-search run`` shows while trials run: the live table of trials (running ones with their
epoch out of their total, last validation value and the time they still need, then finished ones), and a
log filter that keeps Optuna from printing a traceback for an expected trial failure.

Also :func:`details_log`: what the tracking store's client logs when it fails (MLflow's error records
with their tracebacks, SQLAlchemy's statements, urllib3's retries) goes to a log file instead of the
terminal, which gets one message.

Imported by the ``run`` command only when it runs (it loads optuna).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dhns_search.cli._format import params_text, short_names
from dhns_search.errors import DhnsError
from dhns_search.search.objectives import ObjectiveSpec, is_feasible, primary_index
from dhns_search.search.queries import best_trial, primary_value, violation_text
from dhns_search.search.runner import PreparedRun
from dhns_search.search.trial import TrialFailed

__all__ = ["DetailsLog", "LiveTable", "details_log", "quiet_failed_trials"]

_STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "INFEASIBLE": "magenta", "RUNNING": "cyan"}


@dataclass
class _Running:
    """A trial in progress, as the trainer's callbacks report it."""

    epoch: int
    value: float | None  # the last validation value (None before the first evaluation)
    since: float  # time.monotonic() of its first report
    params: dict[str, Any]
    total: int | None = None  # the epochs it runs at most (train.epochs)
    first_epoch: int = 0  # the epoch of its first report (a resumed trial starts late)
    epoch_at: float = 0.0  # time.monotonic() of its latest epoch report

    def eta(self) -> float | None:
        """Seconds until its last epoch at the pace of the epochs seen so far (None: not known yet)."""
        done = self.epoch - self.first_epoch
        if self.total is None or done <= 0:
            return None
        return (self.epoch_at - self.since) / done * max(0, self.total - self.epoch)

    def epochs(self) -> str:
        return f"{self.epoch}/{self.total}" if self.total else str(self.epoch)


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LiveTable:
    """Shows trials as they run and as they end (a :class:`~dhns_search.search.runner.Monitor`).

    On a terminal: a live rich table (the last ``max_rows`` finished trials, then the running ones with
    their epoch out of their total, last validation value, time so far and the time they still need at
    the pace of their epochs so far; the first ``max_params`` parameters in sampling order).  Elsewhere
    (logs, CI): one line per evaluation of a running trial (the same facts) and one per finished trial
    with every parameter.  ``enabled=False`` (``--no-live``) shows nothing.
    """

    def __init__(self, console: Console, *, max_rows: int = 20, max_params: int = 8, enabled: bool = True) -> None:
        self.console = console
        self.max_rows = max_rows
        self.max_params = max_params
        self.enabled = enabled
        self.study_name = ""
        self.objectives: list[ObjectiveSpec] = []
        self.short: dict[str, str] = {}
        self.rows: list[tuple[FrozenTrial, float | None]] = []
        self.running: dict[int, _Running] = {}
        self._study: optuna.Study | None = None
        self._lock = threading.Lock()  # trials may report from several threads
        self._live: Live | None = None

    @contextlib.contextmanager
    def watch(self, run: PreparedRun) -> Iterator[None]:
        """Learn the study's name, parameters and objectives; show the live table (on a terminal) while
        the block runs."""
        self.study_name = run.name
        self._study = run.study
        self.objectives = list(run.objectives)
        self.short = short_names(run.space.names)
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
        return self._params_of(trial.params, limit)

    def _params_of(self, params: dict[str, Any], limit: int | None = None) -> str:
        items = list(params.items())
        shown = items if limit is None else items[:limit]
        text = params_text(dict(shown), self.short, digits=3)
        return text + (f"  (+{len(items) - len(shown)} more)" if len(shown) < len(items) else "")

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
        with self._lock:
            running = sorted(self.running.items())
        for number, now in running:
            value = "-" if now.value is None else f"{now.value:.4f}"
            eta = now.eta()
            table.add_row(str(number), Text("running", style=_STATE_STYLE["RUNNING"]),
                          f"{value} (epoch {now.epochs()})", "-",
                          _duration(time.monotonic() - now.since) + ("" if eta is None else f", ETA {_duration(eta)}"),
                          self._params_of(now.params, self.max_params))
        hidden = len(self.rows) - self.max_rows
        parts: list[Any] = [table]
        if hidden > 0:
            parts.insert(0, Text(f"... {hidden} earlier trials of this run not shown", style="dim"))
        return Group(*parts)

    def _sampled(self, number: int) -> dict[str, Any]:
        """The parameters of the running trial ``number`` (read once, when it first reports)."""
        if self._study is None:
            return {}
        running = self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return next((dict(t.params) for t in running if t.number == number), {})

    def trial_progress(self, number: int, epoch: int, value: float | None, total: int | None = None) -> None:
        """A running trial finished an epoch (``value`` None) or an evaluation (its validation value);
        ``total`` is the number of epochs it runs at most."""
        with self._lock:
            now = self.running.get(number)
            clock = time.monotonic()
            if now is None:
                now = self.running[number] = _Running(epoch, None, clock, self._sampled(number), total, epoch, clock)
            if value is None and epoch > now.epoch:
                now.epoch_at = clock
            now.epoch = epoch
            now.total = total or now.total
            now.value = now.value if value is None else value
            eta = now.eta()
        if not self.enabled:
            return
        if self._live is not None:
            self._live.update(self.render())
        elif value is not None:
            self.console.print(f"trial {number}: running, epoch {now.epochs()}, value {value:.4f}"
                               + ("" if eta is None else f", ETA {_duration(eta)}"), highlight=False,
                               markup=False, soft_wrap=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        best = best_trial(study)
        best_value = primary_value(best, self.objectives) if best else None
        with self._lock:
            self.running.pop(trial.number, None)
        self.rows.append((trial, best_value))
        if not self.enabled:
            return
        if self._live is not None:
            self._live.update(self.render())
            return
        reason = trial.user_attrs.get("fail_reason") if trial.state == TrialState.FAIL else None
        if self._state(trial) == "infeasible":
            reason = f"infeasible: {violation_text(study, trial)}"
        names = "" if len(self.objectives) <= 1 else f" ({', '.join(s.label for s in self.objectives)})"
        self.console.print(
            f"trial {trial.number}: {trial.state.name.lower()} value{names} {self._value(trial)} "
            f"best {'-' if best_value is None else f'{best_value:.4f}'}  {self._params(trial)}"
            + (f"  [{reason}]" if reason else ""),
            highlight=False, markup=False, soft_wrap=True,
        )


class _QuietFailedTrials(logging.Filter):
    """Drop Optuna's traceback for trials that failed with :class:`TrialFailed` (an expected outcome
    whose reason the live table and the ``fail_reason`` attribute already show), were stopped by a
    second Ctrl-C (``KeyboardInterrupt``) or stopped the study with one of this project's errors (a failing
    tracking store): the command says so in one line."""

    _VALUE = re.compile(r"^Trial (\d+) failed with value")
    _PARAMS = re.compile(r"^Trial (\d+) failed with parameters")

    def __init__(self) -> None:
        super().__init__()
        self.quiet: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], (TrialFailed, KeyboardInterrupt, DhnsError)):
            m = self._PARAMS.match(msg)
            if m:
                self.quiet.add(m.group(1))
            return False
        m = self._VALUE.match(msg)
        return not (m and m.group(1) in self.quiet)


@contextlib.contextmanager
def quiet_failed_trials() -> Iterator[None]:
    """While the block runs, Optuna logs no traceback for a trial that failed with :class:`TrialFailed`."""
    logger = logging.getLogger("optuna.study._optimize")
    flt = _QuietFailedTrials()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


#: loggers of the tracking store's client whose failures the command sums up in one message
_STORE_LOGGERS = ("mlflow", "urllib3", "sqlalchemy", "alembic")


class DetailsLog(logging.FileHandler):
    """The log file of :func:`details_log`: created at its first record; ``written`` says whether it was.
    A file that cannot be written (the full disk that failed the store) is given up quietly."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True, encoding="utf-8")
        self.path = path
        self.written = False
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return
        super().emit(record)
        self.written = self.written or self.path.is_file()

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _OnlyInTheLog(logging.Filter):
    """On the terminal's handlers: drop the store client's errors and tracebacks (they are in the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and not record.exc_info


@contextlib.contextmanager
def details_log(path: Path) -> Iterator[DetailsLog]:
    """While the block runs, the tracking store's client logs its warnings and errors (tracebacks included)
    to ``path``; the terminal keeps its warnings but not its errors, which the command's one message sums up."""
    handler = DetailsLog(path)
    handler.setLevel(logging.WARNING)
    quiet = _OnlyInTheLog()
    loggers = [logging.getLogger(name) for name in _STORE_LOGGERS]
    propagate = [logger.propagate for logger in loggers]
    terminal = [h for logger in loggers for h in logger.handlers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.name != "mlflow":  # to the log only (the root logger would print urllib3's retries)
            logger.propagate = False
    for h in terminal:
        h.addFilter(quiet)
    try:
        yield handler
    finally:
        for h in terminal:
            h.removeFilter(quiet)
        for logger, before in zip(loggers, propagate):
            logger.removeHandler(handler)
            logger.propagate = before
        handler.close()
