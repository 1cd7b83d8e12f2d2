"""The Optuna objective: one trial = sample the space, build the config, train with a pruning callback.

A trial's configuration is, in this order: **base, fixed, ``--set`` overrides, sampled values** (see
:mod:`dhns_search.search.space.runtime`), then the trial's own seed (derived from the study seed and
the trial number, :func:`~dhns_search.search.seeds.trial_seed`), the device, ``train.test: false`` (the
test split is never used during a search) and ``train.progress: false``.  The trial's value is the best
validation ``cfg.train.metric``; with several objectives (``run --objective mrr,epoch_seconds``) it is
one value per objective, in their order (see :mod:`dhns_search.search.objectives`).

Every trial that trained is measured: ``epoch_seconds`` (mean over the epochs run, evaluation
excluded), ``train_seconds`` and ``peak_memory_mb`` (:class:`~dhns_search.search.resources.PeakMemory`)
become user attributes and metrics of the MLflow child run (``mean_epoch_seconds``, ``train_seconds``,
``peak_memory_mb``).  With caps, ``measured - cap`` is set as an Optuna constraint
(``trial.set_constraint``) on completed and pruned trials.

Outcomes:

- complete: value returned; user attrs ``best_epoch``, ``seed``, ``train_seconds``, ``trial_seconds``,
  ``epoch_seconds``, ``peak_memory_mb`` (and ``peak_memory_kind``), ``mlflow_run_id``,
  ``dataset_fingerprint``; the records ``params`` (decoded), ``config`` (the resolved configuration) and
  ``best_valid`` are kept out of the user attributes (:mod:`~dhns_search.search.trial_data`);
- pruned: :class:`~dhns_search.training.StopTraining` from :class:`TrialCallback` becomes
  :class:`optuna.TrialPruned`; user attr ``pruned_at``; its MLflow run is FINISHED with tag
  ``dhns.state=PRUNED``, the epoch and the last value;
- failed (:func:`is_trial_failure`): a :class:`~dhns_search.errors.DhnsError` (bad combination, NaN loss
  ...) or running out of memory (``torch.cuda.OutOfMemoryError``, or the CPU allocator's out-of-memory
  ``RuntimeError``) becomes :class:`TrialFailed`, which the study catches: the trial is FAIL with user
  attr ``fail_reason`` and the study goes on;
- a file the trial could not write (:class:`~dhns_search.errors.WriteError`: a full or read-only work
  directory) and a failing tracking store stop the study with one message: the trial is FAIL, keeps its
  checkpoint and is queued again, so the same command continues it once the cause is fixed;
- anything else (a shape mismatch in the trainer, a ``KeyError`` ...) is a bug: the trial is FAIL with its
  ``fail_reason``, and the exception propagates, so the study stops with the traceback.

The MLflow child run is ended in every case (``finally``).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch

from dhns_search.config.io import deep_merge, dump_yaml, validate_config
from dhns_search.config.models import RunConfig
from dhns_search.errors import DhnsError, TrackingError, WriteError
from dhns_search.search import trial_data
from dhns_search.search.objectives import ObjectiveSpec, constraint_values, primary_index
from dhns_search.search.resources import PeakMemory
from dhns_search.search.seeds import trial_seed
from dhns_search.search.space import SearchSpace, flatten_config, suggest
from dhns_search.search.space.encoding import short_values
from dhns_search.search.trial_folder import INTERRUPTED, TrialFolder
from dhns_search.search.urls import display_url
from dhns_search.training import StopTraining, train
from dhns_search.training.loop import TrainingInterrupted

if TYPE_CHECKING:
    from dhns_search.tracking.study import MlflowBridge, TrialRun

__all__ = ["TRACKING_FAILED", "WRITE_FAILED", "Objective", "Progress", "TrialCallback", "TrialFailed", "is_tracking_failure",
           "is_trial_failure"]

#: told of a running trial: (trial number, epoch, validation value at an evaluation; None after an epoch,
#: epochs it runs at most)
Progress = Callable[[int, int, "float | None", "int | None"], None]

#: how the CPU allocator says it is out of memory (a plain ``RuntimeError``; Linux, then Windows wording)
_CPU_OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")


class TrialFailed(Exception):
    """A trial failed for a reason that concerns this trial only (its state becomes FAIL)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_trial_failure(err: BaseException) -> bool:
    """Whether ``err`` fails one trial and lets the study go on: this project's errors (a bad combination,
    a NaN loss ...) and running out of memory.  Anything else is a bug that must stop the study."""
    if isinstance(err, (DhnsError, torch.cuda.OutOfMemoryError)):
        return True
    return type(err) is RuntimeError and any(text in str(err) for text in _CPU_OUT_OF_MEMORY)


#: how the fail reason of a trial stopped by a failing tracking store begins (it is queued again)
TRACKING_FAILED = "the tracking store failed"
#: how the fail reason of a trial stopped by a file it could not write begins (a full or read-only work
#: directory: it is queued again, and the study stops rather than fail every trial the same way)
WRITE_FAILED = "a file could not be written"


def is_tracking_failure(err: BaseException) -> bool:
    """Whether ``err`` comes from the MLflow tracking store (an MLflow error, a failed HTTP request)."""
    from dhns_search.tracking.store import is_store_failure

    return is_store_failure(err)


#: lines of a database error that say where it happened, not what: SQLAlchemy's notes, the statement
_NOT_THE_CAUSE = ("(raised as a result of Query-invoked autoflush", "[SQL:", "[parameters:", "(Background on this")


def tracking_cause(err: BaseException) -> str:
    """What went wrong with the store, in one line: the first line of the error (or of what it was raised
    from) that is not one of SQLAlchemy's notes (``Query-invoked autoflush``, the SQL, its parameters)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for line in str(current).splitlines():
            line = line.strip()
            if line and not line.startswith(_NOT_THE_CAUSE):
                return line[:300]
        current = current.__cause__ or current.__context__
    return type(err).__name__


def tracking_reason(err: BaseException, store: str | None = None) -> str:
    """``the tracking store failed (Error: cause)`` (the trial's ``fail_reason``); with ``store``, the
    message names it: ``the tracking store URI failed (...)``."""
    failed = TRACKING_FAILED if store is None else f"the tracking store {display_url(store)} failed"
    return f"{failed} ({type(err).__name__}: {tracking_cause(err)})"


def _tracking_error(number: int, err: BaseException, store: str | None) -> TrackingError:
    return TrackingError(f"{tracking_reason(err, store)} during trial {number}. The study is consistent: trial "
                         f"{number} is failed and queued again (it resumes from its checkpoint); run the same "
                         "command again once the store answers")


class TrialCallback:
    """A training :class:`~dhns_search.training.Callback` that reports to Optuna and logs to MLflow.

    ``on_evaluation`` reports the validation metric with ``step = epoch`` and raises ``StopTraining``
    when the pruner says so; ``on_epoch_end`` logs the epoch statistics (``train_loss``,
    ``diffusion_loss``, ``epoch_seconds`` ...) and keeps the epoch times.  Validation metrics are logged
    as ``valid_<name>``.  ``report=False`` (multi-objective studies, where Optuna has no pruning)
    neither reports nor prunes.  ``progress`` (the live table) is told the epoch and the last validation value.
    """

    def __init__(self, trial: optuna.Trial, metric: str, run: TrialRun | None = None, *,
                 report: bool = True, progress: Progress | None = None, epochs: int | None = None) -> None:
        self.trial = trial
        self.metric = metric
        self.run = run
        self.report = report
        self.progress = progress
        self.epochs = epochs  # train.epochs: what the live table counts towards
        self.last_epoch = 0
        self.first_epoch: int | None = None  # the first epoch this process trained (a resumed run: > 1)
        self.best: float | None = None
        self.last_value: float | None = None
        self.epoch_seconds: list[float] = []

    @property
    def mean_epoch_seconds(self) -> float | None:
        """Mean seconds of the training epochs run so far (None before the first)."""
        return sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds else None

    def on_epoch_end(self, epoch: int, stats: dict[str, float]) -> None:
        self.last_epoch = epoch
        if self.first_epoch is None:
            self.first_epoch = epoch
        secs = stats.get("epoch_seconds")
        if isinstance(secs, (int, float)) and math.isfinite(secs):
            self.epoch_seconds.append(float(secs))
        if self.run is not None:
            self.run.log_metrics(stats, step=epoch)
        if self.progress is not None:
            self.progress(self.trial.number, epoch, None, self.epochs)

    def on_evaluation(self, epoch: int, metrics: dict[str, float], history: list[dict]) -> None:
        value = float(metrics[self.metric])
        self.last_epoch, self.last_value = epoch, value
        if not math.isnan(value) and (self.best is None or value > self.best):
            self.best = value
        if self.run is not None:
            last = history[-1] if history else {}
            self.run.log_validation(metrics, step=epoch, eval_seconds=last.get("eval_seconds"))
            if self.best is not None:
                self.run.log_progress(self.best, step=epoch)  # the leaderboard's objective while it runs
        if self.progress is not None:
            self.progress(self.trial.number, epoch, value, self.epochs)
        if not self.report:
            return
        with warnings.catch_warnings():
            # a trial retried without its checkpoint (another machine) trains again from epoch 1; the epochs its
            # first attempt reported are inherited, and the same seed gives the same values: keep the first quietly
            warnings.filterwarnings("ignore", message=r"The reported value is ignored because this `step=",
                                    category=UserWarning)
            self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise StopTraining(f"pruned at epoch {epoch} ({self.metric} {value:.4f})")


@dataclass
class _Outcome:
    """How far one trial got; the ``finally`` of :meth:`Objective.__call__` ends its MLflow run with it."""

    folder: TrialFolder
    state: str = "FAIL"
    store_failed: bool = False  # the tracking store failed during the trial
    value: float | None = None
    reason: str | None = None
    callback: TrialCallback | None = None
    measures: dict[str, Any] = field(default_factory=dict)

    @property
    def last_epoch(self) -> int:
        return self.callback.last_epoch if self.callback else 0


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


class Objective:
    """Callable objective for :meth:`optuna.Study.optimize`.

    ``trainer`` defaults to :func:`dhns_search.training.train`; ``dataset`` is a pre-loaded dataset
    shared by all trials (None: each trial loads its own, needed when the space searches ``data.*``).
    ``objectives`` (default: the single objective ``train.metric``) say what the trial returns;
    ``caps`` (measurement -> limit) become Optuna constraints.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        study_seed: int,
        overrides: list[str] | None = None,
        device: str | None = None,
        bridge: MlflowBridge | None = None,
        dataset: Any = None,
        trainer: Callable[..., Any] | None = None,
        objectives: Sequence[ObjectiveSpec] | None = None,
        caps: Mapping[str, float] | None = None,
        progress: Progress | None = None,
        work_dir: Path | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.space = space
        self.study_seed = study_seed
        self.overrides = list(overrides or [])
        self.device = device
        self.bridge = bridge
        self.dataset = dataset
        self.trainer = trainer or train
        self.objectives = list(objectives or [])
        self.caps = dict(caps or {})
        self.progress = progress
        self.work_dir = work_dir
        self.stop = stop

    def trial_mapping(self, sampled: dict[str, Any], seed: int) -> dict:
        """The trial's configuration as a plain mapping (not yet validated)."""
        data = self.space.merged(sampled, self.overrides)
        data["seed"] = seed
        if self.device is not None:
            data["device"] = self.device
        data.setdefault("train", {})
        data["train"]["test"] = False
        data["train"]["progress"] = False
        return data

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        t0, cpu0 = time.perf_counter(), time.process_time()
        folder = TrialFolder.start(trial, self.work_dir, self.device)  # a retry continues its dead trial's
        seed = folder.seed if folder.seed is not None else trial_seed(self.study_seed, trial.number)
        trial.set_user_attr("seed", seed)
        sampled = suggest(trial, self.space)
        trial_data.store(trial, "params", _jsonable(self.space.resolve(sampled)))
        data = self.trial_mapping(sampled, seed)
        try:
            run = self._start_run(trial, sampled, data, seed, folder)
        except Exception as err:
            if not is_tracking_failure(err):
                raise
            trial.set_user_attr("fail_reason", tracking_reason(err))
            raise _tracking_error(trial.number, err, self._store) from None
        out = _Outcome(folder=folder)
        try:
            return self._train(trial, sampled, data, run, out)
        except StopTraining as stop:
            out.state, out.reason = "PRUNED", str(getattr(stop, "reason", stop))
            out.value = out.callback.last_value if out.callback else None
            trial.set_user_attr("pruned_at", out.last_epoch)
            self._record(trial, out.measures, run, out.last_epoch, constrain=True)
            raise optuna.TrialPruned(out.reason) from None
        except TrialFailed as err:
            out.reason = err.reason
            self._record_failure(trial, run, out)
            raise
        except TrainingInterrupted as err:  # Ctrl-C / SIGTERM: checkpointed, retried by the next run
            out.state, out.reason = "INTERRUPTED", INTERRUPTED
            trial.set_user_attr("interrupted_at", f"epoch {err.epoch}, batch {err.batch}")
            self._record_failure(trial, run, out)
            raise TrialFailed(INTERRUPTED) from None
        except BaseException as err:
            out.reason = f"{type(err).__name__}: {err}"
            if is_tracking_failure(err):  # the study stops; this trial is queued again (its checkpoint kept)
                out.state, out.reason, out.store_failed = "INTERRUPTED", tracking_reason(err), True
                trial.set_user_attr("fail_reason", out.reason)
                raise _tracking_error(trial.number, err, self._store) from None
            if isinstance(err, WriteError):  # a full or read-only work directory: every trial would fail
                out.state, out.reason = "INTERRUPTED", f"{WRITE_FAILED} ({err})"
                trial.set_user_attr("fail_reason", out.reason)
                raise WriteError(err.path, f"{err.reason}, during trial {trial.number}. The study is consistent: "
                                 f"trial {trial.number} is failed and queued again (it resumes from its last "
                                 "checkpoint); run the same command again once there is space") from None
            if is_trial_failure(err):
                self._record_failure(trial, run, out)
                raise TrialFailed(out.reason) from err
            # a bug or an interrupt: the child run is ended below, the exception stops the study
            out.reason = out.reason.rstrip(": ")
            if isinstance(err, KeyboardInterrupt):
                out.state = "INTERRUPTED"
            trial.set_user_attr("fail_reason", out.reason)
            raise
        finally:
            trial.set_user_attr("trial_seconds", round(time.perf_counter() - t0, 3))
            # CPU seconds of this process (every thread) during the trial: what a campaign spends
            trial.set_user_attr("cpu_seconds", round(time.process_time() - cpu0, 3))
            if out.callback is not None and out.callback.first_epoch is not None and folder.resume:
                trial.set_user_attr("resumed_from_epoch", out.callback.first_epoch - 1)
            folder.finish(out.state)
            if run is not None:
                self._end_run(trial.number, run, out)

    @property
    def _store(self) -> str | None:
        return getattr(self.bridge, "tracking_uri", None)

    def _end_run(self, number: int, run: TrialRun, out: _Outcome) -> None:
        """End the trial's MLflow run; a store that fails here stops the study with one message (unless it
        already failed during the trial: that message is on its way)."""
        try:
            run.end(out.state, value=out.value, reason=out.reason, epoch=out.last_epoch)
        except Exception as err:
            if not is_tracking_failure(err):
                raise
            if not out.store_failed:
                raise _tracking_error(number, err, self._store) from None

    def _start_run(self, trial: optuna.Trial, sampled: dict[str, Any], data: dict, seed: int,
                   folder: TrialFolder) -> TrialRun | None:
        """The trial's MLflow child run, with the configuration as params (None when MLflow is off).  A
        retry first ends the dead trial's run (KILLED, tagged with the retry) if it is still RUNNING."""
        if self.bridge is None:
            return None
        if folder.retry_of is not None:
            self.bridge.close_retried(folder.retry_of, trial.number)
        # The same keys for every trial: the defaults filled in, even when validation fails later.
        flat = flatten_config(deep_merge(RunConfig().model_dump(mode="json"), data))
        from dhns_search.tracking.tracker import searched_params

        tags = {"dhns.seed": seed, "dhns.sampled": ",".join(sampled), "dhns.device": folder.device,
                "dhns.retry_of": folder.retry_of, "dhns.resumed": "true" if folder.resume else None}
        run = self.bridge.start_trial(trial.number, flat, tags, searched=searched_params(sampled))
        trial.set_user_attr("mlflow_run_id", run.run_id)
        return run

    def _train(self, trial: optuna.Trial, sampled: dict[str, Any], data: dict, run: TrialRun | None,
               out: _Outcome) -> float | list[float]:
        """Validate the configuration, train, record the result; ``out`` follows each stage."""
        cfg = validate_config(data, f"{self.space.source}: trial {trial.number} {short_values(sampled)}")
        trial_data.store(trial, "config", cfg.model_dump(mode="json"))
        if run is not None:
            run.log_text(dump_yaml(cfg), "config.yaml")
        out.callback = TrialCallback(trial, cfg.train.metric, run, report=len(self.objectives) <= 1,
                                     progress=self.progress, epochs=cfg.train.epochs)
        memory = PeakMemory(cuda=self._uses_cuda(cfg))
        t_train = time.perf_counter()
        try:
            with memory:
                result = self.trainer(cfg, dataset=self.dataset, callbacks=[out.callback],
                                      **out.folder.trainer_kwargs(self.trainer, self.stop))
        finally:
            out.measures = {"train_seconds": time.perf_counter() - t_train,
                            "epoch_seconds": out.callback.mean_epoch_seconds,
                            "peak_memory_mb": memory.peak_mb, "peak_memory_kind": memory.kind}
        values = self._values(cfg, result.best_valid, out.measures)
        out.value = values[primary_index(self.objectives)]
        self._record_result(trial, result, run, values, out.measures)
        out.state = "COMPLETE"
        return values if len(values) > 1 else values[0]

    @staticmethod
    def _uses_cuda(cfg: RunConfig) -> bool:
        """Whether the trainer will put this trial on a GPU (device cuda, or auto with one present)."""
        if cfg.device == "cpu":
            return False
        return bool(torch.cuda.is_available())

    def _values(self, cfg: RunConfig, best_valid: Mapping[str, float], measures: Mapping[str, Any]) -> list[float]:
        specs = self.objectives or [ObjectiveSpec(cfg.train.metric, "maximize", "accuracy", cfg.train.metric)]
        values = []
        for spec in specs:
            raw = best_valid.get(spec.name) if spec.kind == "accuracy" else measures.get(spec.name)
            if not isinstance(raw, (int, float)):
                what = "the evaluator did not report it" if spec.kind == "accuracy" else "it could not be measured"
                raise TrialFailed(f"objective {spec.name}: {what}")
            if math.isnan(raw):
                raise TrialFailed(f"the {'validation ' if spec.kind == 'accuracy' else ''}{spec.name} is nan")
            values.append(float(raw))
        return values

    def _record_result(self, trial: optuna.Trial, result: Any, run: TrialRun | None, values: list[float],
                       measures: dict[str, Any]) -> None:
        """A completed trial's result -> user attrs, constraints, and its MLflow run."""
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("epochs_run", int(result.epochs_run))
        self._record(trial, measures, run, int(result.epochs_run), constrain=True)
        best_valid = {k: float(v) for k, v in result.best_valid.items()}
        trial_data.store(trial, "best_valid", best_valid)
        trial_data.store(trial, "config", result.config.model_dump(mode="json"))
        fingerprint = getattr(result, "dataset_fingerprint", None)
        if fingerprint is None and self.dataset is not None:
            fingerprint = self.dataset.fingerprint()
        if fingerprint:
            trial.set_user_attr("dataset_fingerprint", fingerprint)
        if run is not None:
            run.log_text(dump_yaml(result.config), "config.yaml")
            run.log_result(values[primary_index(self.objectives)], best_epoch=int(result.best_epoch),
                           values={s.label: v for s, v in zip(self.objectives, values)},
                           result={"best_epoch": result.best_epoch, "best_valid": best_valid,
                                   "history": result.history}, best_valid=best_valid)
            if len(values) > 1:
                run.set_tags({"dhns.values": ", ".join(
                    f"{s.name}={v!r}" for s, v in zip(self.objectives, values))})

    def _record(self, trial: optuna.Trial, measures: dict[str, Any], run: TrialRun | None, step: int,
                *, constrain: bool) -> None:
        """Measurements -> user attrs, MLflow metrics and (completed / pruned trials) constraints."""
        for key in ("epoch_seconds", "train_seconds", "peak_memory_mb"):
            if measures.get(key) is not None:
                trial.set_user_attr(key, round(float(measures[key]), 6))
        if measures.get("peak_memory_kind"):
            trial.set_user_attr("peak_memory_kind", measures["peak_memory_kind"])
        if run is not None:
            names = {"epoch_seconds": "mean_epoch_seconds", "train_seconds": "train_seconds",
                     "peak_memory_mb": "peak_memory_mb"}
            run.log_metrics({names[k]: measures[k] for k in names if measures.get(k) is not None}, step=step)
        if constrain and self.caps:
            for name, value in constraint_values(measures, self.caps).items():
                trial.set_constraint(name, value)

    def _record_failure(self, trial: optuna.Trial, run: TrialRun | None, out: _Outcome) -> None:
        """``fail_reason``, and what the trial measured before it failed (no constraints: Optuna ignores
        failed trials)."""
        trial.set_user_attr("fail_reason", out.reason)
        if out.measures.get("epoch_seconds") is None:
            return
        with contextlib.suppress(Exception):  # never hide the trial's own failure
            self._record(trial, out.measures, run, out.last_epoch, constrain=False)
