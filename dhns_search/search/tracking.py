"""The MLflow bridge: a study's experiment, its parent run and one child run per trial, over
:class:`mlflow.tracking.MlflowClient` (what the parent receives is decided in :mod:`.publish`).

Layout in the tracking store (one experiment per study, named after it)::

    experiment <study>
    ├── parent run  "<study>"        tags dhns.study, dhns.study_uid, dhns.role=parent
    │     artifacts: space file, leaderboard.csv/.md, best_config.yaml, plots/*.png
    │     metrics:   best_value (step = trial number), n_complete ...
    └── child runs  "trial-0007"     tags mlflow.parentRunId, dhns.study, dhns.trial_number, dhns.state
          params:    the full resolved configuration, flattened (same keys in every trial)
          metrics:   valid_* per evaluation and train_* per epoch, step = epoch
          artifacts: config.yaml

The parent is found again by its tags when a study continues (also from another process), so a study
has exactly one parent.  Every child is ended, whatever happened to its trial: FINISHED for a completed
trial, KILLED for a pruned one, FAILED (with the reason as tag ``dhns.fail_reason``) for a failed one.

optuna-integration's ``MLflowCallback`` is not used: it logs only final values and makes no parent run.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# No network from a library: MLflow's usage telemetry stays off unless the user turned it on explicitly.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dhns_search.errors import StudyError
from dhns_search.search.options import DEFAULT_UI_HOST, DEFAULT_UI_PORT
from dhns_search.search.urls import DEFAULT_TRACKING_URI, sqlite_path

__all__ = [
    "MLFLOW_STATUS",
    "MlflowBridge",
    "TrialRun",
    "artifact_root_for",
    "prepare_tracking_uri",
    "ui_command",
]

#: Optuna trial state -> MLflow run status.
MLFLOW_STATUS = {
    "COMPLETE": "FINISHED",
    "PRUNED": "KILLED",
    "FAIL": "FAILED",
    "INTERRUPTED": "KILLED",  # Ctrl-C: Optuna records FAIL, MLflow says the run was killed
    "RUNNING": "RUNNING",
}

_PARAM_BATCH = 100  # MLflow accepts at most 100 params per log_batch call
_METRIC_BATCH = 1000


def prepare_tracking_uri(uri: str) -> str:
    """Create the folder of a SQLite tracking database; other URIs are returned unchanged."""
    path = sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return uri


def artifact_root_for(uri: str) -> Path:
    """Absolute artifact folder for a tracking URI: ``<db folder>/artifacts`` for SQLite.

    MLflow 3 would otherwise place artifacts relative to the working directory of whichever process
    creates the experiment; an explicit absolute ``file://`` location keeps them in one place.
    """
    path = sqlite_path(uri)
    if path is not None:
        return path.resolve().parent / "artifacts"
    return Path("mlruns/artifacts").resolve()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class TrialRun:
    """The child run of one trial."""

    client: MlflowClient
    run_id: str
    number: int

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log numeric values with ``step`` (non-numbers are skipped)."""
        ts = _now_ms()
        items = [
            Metric(key, float(v), ts, int(step))
            for key, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for i in range(0, len(items), _METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _METRIC_BATCH])

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _PARAM_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def end(self, state: str, *, value: float | None = None, reason: str | None = None) -> None:
        """End the run: ``state`` is an Optuna state name (COMPLETE, PRUNED, FAIL)."""
        tags: dict[str, Any] = {"dhns.state": state}
        if reason:
            tags["dhns.fail_reason" if state == "FAIL" else "dhns.reason"] = reason[:4000]
        if value is not None and not math.isnan(value):
            tags["dhns.value"] = repr(float(value))
        self.set_tags(tags)
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(state, "FAILED"))


class MlflowBridge:
    """One experiment per study, one parent run per study, one child run per trial."""

    def __init__(
        self,
        tracking_uri: str,
        study_name: str,
        *,
        study_uid: str,
        artifact_root: str | Path | None = None,
    ) -> None:
        self.tracking_uri = prepare_tracking_uri(tracking_uri)
        self.study_name = study_name
        self.study_uid = study_uid
        self.artifact_root = Path(artifact_root).resolve() if artifact_root else artifact_root_for(tracking_uri)
        for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "creating tables ..." chatter
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None

    # ------------------------------------------------------------------------------ study level
    def _experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.study_name)
        if exp is None:
            location = (self.artifact_root / self.study_name).as_uri()
            try:
                return self.client.create_experiment(
                    self.study_name, artifact_location=location, tags={"dhns.study": self.study_name}
                )
            except MlflowException:  # created meanwhile by another process
                exp = self.client.get_experiment_by_name(self.study_name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == LifecycleStage.DELETED:
            self.client.restore_experiment(exp.experiment_id)
        return exp.experiment_id

    def _parents(self) -> list:
        flt = (
            f"tags.`dhns.study` = {_quote(self.study_name)} and tags.`dhns.role` = 'parent' "
            f"and tags.`dhns.study_uid` = {_quote(self.study_uid)}"
        )
        runs = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=100)
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def start_study(self, tags: Mapping[str, Any] | None = None) -> str:
        """Find (by tags) or create the parent run and mark it RUNNING; returns its id."""
        self.experiment_id = self._experiment()
        parents = self._parents()
        if not parents:
            created = self.client.create_run(
                self.experiment_id,
                run_name=self.study_name,
                tags={"dhns.study": self.study_name, "dhns.study_uid": self.study_uid, "dhns.role": "parent"},
            )
            parents = self._parents()
            # two processes may have created a parent at the same moment: keep the oldest only
            for extra in parents[1:]:
                if extra.info.run_id == created.info.run_id:
                    self.client.delete_run(extra.info.run_id)
            parents = parents[:1] or [created]
        self.parent_run_id = parents[0].info.run_id
        self.client.update_run(self.parent_run_id, status="RUNNING")
        if tags:
            self.client.log_batch(self.parent_run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return self.parent_run_id

    def _require_parent(self) -> str:
        if self.parent_run_id is None:
            raise RuntimeError("start_study() must be called first")
        return self.parent_run_id

    def children(self, status: str | None = None) -> list:
        """The child runs of this study's parent (optionally only those with ``status``)."""
        flt = f"tags.`mlflow.parentRunId` = {_quote(self._require_parent())}"
        if status:
            flt += f" and attributes.status = {_quote(status)}"
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=1000,
                                           page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def reconcile(self, trial_states: Mapping[int, str]) -> int:
        """End child runs left RUNNING by a crashed process whose trial is over; returns how many."""
        fixed = 0
        for run in self.children(status="RUNNING"):
            try:
                number = int(run.data.tags.get("dhns.trial_number", ""))
            except ValueError:
                continue
            state = trial_states.get(number)
            if state is not None and state != "RUNNING":
                reason = "the process running this trial stopped; state taken from the study"
                TrialRun(self.client, run.info.run_id, number).end(state, reason=reason)
                fixed += 1
        return fixed

    def log_parent_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        TrialRun(self.client, self._require_parent(), -1).log_metrics(metrics, step)

    def set_parent_tags(self, tags: Mapping[str, Any]) -> None:
        TrialRun(self.client, self._require_parent(), -1).set_tags(tags)

    def log_parent_text(self, text: str, name: str) -> None:
        self.client.log_text(self._require_parent(), text, name)

    def log_parent_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self._require_parent(), str(path), artifact_path)

    def log_parent_files(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        for p in paths:
            self.log_parent_file(p, artifact_path)

    def end_study(self, status: str = "FINISHED") -> None:
        """End the parent run (``FINISHED``, ``KILLED`` or ``FAILED``)."""
        self.client.set_terminated(self._require_parent(), status=status)

    # ------------------------------------------------------------------------------ trial level
    def start_trial(self, number: int, params: Mapping[str, str], tags: Mapping[str, Any] | None = None) -> TrialRun:
        """Create the child run of trial ``number`` with the flattened configuration as params."""
        parent = self._require_parent()
        all_tags = {
            "mlflow.parentRunId": parent,
            "dhns.study": self.study_name,
            "dhns.study_uid": self.study_uid,
            "dhns.role": "trial",
            "dhns.trial_number": str(number),
            "dhns.state": "RUNNING",
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:04d}", tags=all_tags)
        child = TrialRun(self.client, run.info.run_id, number)
        try:
            child.log_params(params)
        except BaseException:
            child.end("FAIL", reason="could not log the parameters")
            raise
        return child


def ui_command(tracking_uri: str = DEFAULT_TRACKING_URI, *, port: int = DEFAULT_UI_PORT,
               host: str = DEFAULT_UI_HOST) -> list[str]:
    """The ``mlflow ui`` command line for the project's tracking store."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise StudyError(f"no MLflow tracking store at {path}; run dhns-search run first")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port)]
