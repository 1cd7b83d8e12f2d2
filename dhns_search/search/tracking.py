"""The MLflow bridge: a study's experiment, its parent run and one child run per trial, over
:class:`mlflow.tracking.MlflowClient` (what the parent receives is decided in :mod:`.publish`).

Layout in the tracking store (one experiment per study, named after it)::

    experiment <study>               tags mlflow.experimentKind (model training), mlflow.note.content (the
    │                                space's description), two saved views of the runs table (:mod:`.views`)
    ├── parent run  "<study>"        tags dhns.study, dhns.study_uid, dhns.role=parent; description = leaderboard
    │     artifacts: space file, leaderboard.csv/.md, best_config.yaml, plots/*.png and *.html
    │     metrics:   best_value (step = trial number), n_complete ...
    └── child runs  "trial-0007"     tags mlflow.parentRunId, dhns.study, dhns.trial_number, dhns.state
          params:    the searched parameters, then the rest of the configuration as zconfig.<path>
          metrics:   valid_* (lean set, :mod:`.run_metrics`) per evaluation, train_* per epoch, objective
          artifacts: config.yaml, result.json

Every run (parent, trials, replays) carries its provenance (:func:`start_run`): package versions, git
revision, device and its name, and the dataset as an MLflow dataset input.  The parent is found again by
its tags when a study continues (also from another process), so a study has exactly one parent.  Every
child is ended, whatever happened to its trial: FINISHED for a completed *or pruned* trial (tag
``dhns.state`` says which; a pruned one has ``dhns.pruned_epoch`` / ``dhns.pruned_value``), FAILED for a
failed one (the reason as tag ``dhns.fail_reason`` and as the run's description), KILLED on Ctrl-C.

The module-level functions (:func:`open_experiment`, :func:`start_run`, :func:`log_dataset`,
:func:`ordered_params`, :func:`log_metrics`) are what any command that logs runs needs; optuna-integration's
``MLflowCallback`` is not used: it logs only final values and makes no parent run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# No network from a library: MLflow's usage telemetry stays off unless the user turned it on explicitly.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dhns_search.search.provenance import DatasetSummary, dataset_summary, run_provenance
from dhns_search.search.run_metrics import rank_policy, validation_metrics
from dhns_search.search.tracking_store import open_store
from dhns_search.search.urls import sqlite_path
from dhns_search.search.views import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    OBJECTIVE_METRIC,
    study_view_tags,
)

__all__ = [
    "CONFIG_PREFIX",
    "DESCRIPTION_TAG",
    "MLFLOW_STATUS",
    "MlflowBridge",
    "StudyDescription",
    "TrialRun",
    "artifact_root_for",
    "log_dataset",
    "log_metrics",
    "open_experiment",
    "ordered_params",
    "prepare_tracking_uri",
    "start_run",
]

#: Optuna trial state -> MLflow run status.  A pruned trial ran as the pruner meant it to: FINISHED.
MLFLOW_STATUS = {
    "COMPLETE": "FINISHED",
    "PRUNED": "FINISHED",
    "FAIL": "FAILED",
    "INTERRUPTED": "KILLED",  # Ctrl-C: Optuna records FAIL, MLflow says the run was killed
    "RUNNING": "RUNNING",
}
#: the description of a run or an experiment (markdown, shown at the top of its page)
DESCRIPTION_TAG = "mlflow.note.content"
#: the configuration fields that were not searched are params under this prefix (sorting after the rest)
CONFIG_PREFIX = "zconfig."

_PARAM_BATCH = 100  # MLflow accepts at most 100 params per log_batch call
_METRIC_BATCH = 1000
_TAG_LIMIT = 5000  # characters kept of a long tag value (MLflow allows 8000)


def prepare_tracking_uri(uri: str) -> str:
    """Check the store before anything is written to it, create (or migrate) a SQLite store under a file
    lock, once per process (:func:`~.tracking_store.open_store`); returns ``uri``."""
    return open_store(uri)


def artifact_root_for(uri: str) -> Path:
    """Absolute artifact folder for a tracking URI: ``<db folder>/artifacts`` for SQLite.

    MLflow 3 would otherwise place artifacts relative to the working directory of whichever process
    creates the experiment; an explicit absolute ``file://`` location keeps them in one place.
    """
    path = sqlite_path(uri)
    if path is not None:
        return path.resolve().parent / "artifacts"
    return Path("mlruns/artifacts").resolve()


def make_client(tracking_uri: str) -> MlflowClient:
    """A client on ``tracking_uri`` (its SQLite folder created), without MLflow's table-creation chatter."""
    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=prepare_tracking_uri(tracking_uri))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tags(tags: Mapping[str, Any]) -> list[RunTag]:
    return [RunTag(k, str(v)[:_TAG_LIMIT]) for k, v in tags.items() if v is not None]


# ---------------------------------------------------------------------- reusable pieces
def open_experiment(client: MlflowClient, name: str, *, artifact_location: str | None = None,
                    description: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
    """Find or create the experiment ``name`` (restoring a deleted one) as a model-training experiment
    of MLflow 3's UI, with ``description`` and ``tags``; returns its id."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == LifecycleStage.DELETED:
            client.restore_experiment(exp_id)
    wanted = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, **(tags or {})}
    if description:
        wanted[DESCRIPTION_TAG] = description
    for key, value in wanted.items():
        client.set_experiment_tag(exp_id, key, str(value))
    return exp_id


def log_dataset(client: MlflowClient, run_id: str, dataset: Any, *, context: str = "training") -> None:
    """Log ``dataset`` (a loaded dataset or its :class:`DatasetSummary`) as the run's MLflow dataset input:
    its name, where it was read from, the first 16 hex digits of its fingerprint as the digest, and the
    counts (with the full fingerprint) as its profile."""
    summary = dataset if isinstance(dataset, DatasetSummary) else dataset_summary(dataset)
    schema = {"mlflow_colspec": [{"name": c, "type": "long"} for c in ("head", "relation", "tail")]}
    entity = Dataset(name=summary.name, digest=summary.digest, source_type="local",
                     source=json.dumps({"uri": summary.source}), schema=json.dumps(schema),
                     profile=json.dumps(summary.profile))
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])


def start_run(client: MlflowClient, experiment_id: str, run_name: str, *, tags: Mapping[str, Any] | None = None,
              dataset: Any = None, provenance: Mapping[str, str] | None = None, device: str | None = "auto",
              parent_run_id: str | None = None, description: str | None = None,
              start_time_ms: int | None = None) -> str:
    """Create a run with its provenance (``provenance``, else :func:`~.provenance.run_provenance` of
    ``device``), ``tags``, the dataset input and a description; returns its id."""
    all_tags: dict[str, Any] = dict(provenance if provenance is not None else run_provenance(device))
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if description:
        all_tags[DESCRIPTION_TAG] = description
    all_tags.update(tags or {})
    run = client.create_run(experiment_id, run_name=run_name, start_time=start_time_ms,
                            tags={k: str(v) for k, v in all_tags.items() if v is not None})
    if dataset is not None:
        log_dataset(client, run.info.run_id, dataset)
    return run.info.run_id


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
    """Log the numeric, finite-or-not values of ``metrics`` at ``step`` (non-numbers are skipped)."""
    ts = _now_ms()
    items = [Metric(key, float(v), ts, int(step)) for key, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for i in range(0, len(items), _METRIC_BATCH):
        client.log_batch(run_id, metrics=items[i : i + _METRIC_BATCH])


def ordered_params(searched: Mapping[str, str], config: Mapping[str, str], *,
                   space: Sequence[str] = ()) -> dict[str, str]:
    """The params of a run: the searched parameters first, by their names in the space, then every other
    field of the flattened configuration under :data:`CONFIG_PREFIX` (so they sort after them too).

    ``space`` names every parameter of the space: a conditional one that this run did not sample is
    logged neither way, so every run of a study has the same ``zconfig.`` keys."""
    out = {name: str(value) for name, value in searched.items()}
    skip = set(searched) | set(space)
    out.update({CONFIG_PREFIX + key: value for key, value in config.items() if key not in skip})
    return out


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), _PARAM_BATCH):
        client.log_batch(run_id, params=items[i : i + _PARAM_BATCH])


def objective_metrics(value: float | None, values: Mapping[str, float] | None = None) -> dict[str, float]:
    """``objective`` (the primary objective) and, with several objectives, ``objective.<label>`` each."""
    out: dict[str, float] = {}
    if value is not None and not math.isnan(value):
        out[OBJECTIVE_METRIC] = float(value)
    if values and len(values) > 1:
        out.update({f"{OBJECTIVE_METRIC}.{label.replace('@', '_at_')}": float(v) for label, v in values.items()})
    return out


# ---------------------------------------------------------------------------- a trial's run
@dataclass
class TrialRun:
    """The child run of one trial (or any run logged like one: a replay)."""

    client: MlflowClient
    run_id: str
    number: int
    #: ``train.metric``: its rank policy chooses the lean validation metrics
    policy_metric: str = "mrr_realistic_filtered"
    metric_set: str = "lean"

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log numeric values with ``step`` (non-numbers are skipped)."""
        log_metrics(self.client, self.run_id, metrics, step)

    def log_validation(self, metrics: Mapping[str, Any], step: int, *, eval_seconds: float | None = None) -> None:
        """One evaluation's validation metrics (the lean or full set, :mod:`.run_metrics`) at ``step``."""
        logged: dict[str, Any] = validation_metrics(metrics, self.policy_metric, metric_set=self.metric_set)
        if eval_seconds is not None:
            logged["eval_seconds"] = eval_seconds
        self.log_metrics(logged, step)

    def log_result(self, value: float | None, *, best_epoch: int, values: Mapping[str, float] | None = None,
                   result: Mapping[str, Any] | None = None) -> None:
        """The trial's outcome: ``objective`` (and ``objective.<label>`` with several objectives) and
        ``best_epoch`` at step = best epoch; ``result`` (the full validation breakdown ...) as result.json."""
        self.log_metrics({**objective_metrics(value, values), "best_epoch": best_epoch}, step=best_epoch)
        if result is not None:
            self.client.log_text(self.run_id, json.dumps(result, indent=1, default=str), "result.json")

    def log_params(self, params: Mapping[str, str]) -> None:
        log_params(self.client, self.run_id, params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            self.client.log_batch(self.run_id, tags=_tags(tags))

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def end(self, state: str, *, value: float | None = None, reason: str | None = None,
            epoch: int | None = None) -> None:
        """End the run: ``state`` is an Optuna state name (COMPLETE, PRUNED, FAIL, INTERRUPTED); ``value``
        and ``epoch`` of a pruned trial are its last reported value and the epoch it was pruned at."""
        tags: dict[str, Any] = {"dhns.state": state}
        has_value = value is not None and not math.isnan(value)
        if state == "PRUNED":
            tags["dhns.pruned_epoch"] = epoch
            tags["dhns.pruned_value"] = repr(float(value)) if has_value else None
            shown = f" ({self.policy_metric} {value:.4f})" if has_value else ""
            at = "" if epoch is None else f" at epoch {epoch}"
            tags[DESCRIPTION_TAG] = f"Pruned{at}{shown}: {reason or 'the pruner stopped it'}"
            tags["dhns.reason"] = reason
        elif state in ("FAIL", "INTERRUPTED") and reason:
            tags["dhns.fail_reason"] = reason
            tags[DESCRIPTION_TAG] = f"{'Failed' if state == 'FAIL' else 'Interrupted'}: {reason}"
        elif has_value:
            tags["dhns.value"] = repr(float(value))
        try:
            self.set_tags(tags)
        finally:  # a store that takes no more tags may still end the run: not left RUNNING
            self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(state, "FAILED"))


@dataclass
class StudyDescription:
    """What the experiment and every run of a study are told besides the study's name."""

    text: str | None = None  # the space's description
    params: Sequence[str] = ()  # the searched parameters, in the space's order
    direction: str = "maximize"  # of the primary objective
    objectives: Sequence[str] = ()  # labels of every objective when there are several
    metric: str = "mrr_realistic_filtered"  # train.metric (its rank policy picks the lean metrics)
    dataset: Any = None  # the dataset every trial uses (None: each trial loads its own)
    device: str | None = None  # --device (None: the config's, auto)
    metric_set: str = "lean"
    extra_tags: dict[str, Any] = field(default_factory=dict)


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
        self.client = make_client(self.tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.about = StudyDescription()
        self._provenance: dict[str, str] | None = None
        self._dataset: DatasetSummary | None = None

    # ------------------------------------------------------------------------------ study level
    def _parents(self) -> list:
        flt = (
            f"tags.`dhns.study` = {_quote(self.study_name)} and tags.`dhns.role` = 'parent' "
            f"and tags.`dhns.study_uid` = {_quote(self.study_uid)}"
        )
        runs = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=100)
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def provenance(self) -> dict[str, str]:
        """The provenance tags of this study's runs (worked out once: git and the device name cost time)."""
        if self._provenance is None:
            self._provenance = run_provenance(self.about.device)
            self._provenance["dhns.rank_policy"] = rank_policy(self.about.metric)
        return self._provenance

    def start_study(self, tags: Mapping[str, Any] | None = None, *, about: StudyDescription | None = None) -> str:
        """Open the experiment (model training, described, with its saved views), find (by tags) or create
        the parent run and mark it RUNNING; returns its id."""
        self.about = about or StudyDescription()
        if self.about.dataset is not None:
            self._dataset = dataset_summary(self.about.dataset)
        per_objective = list(objective_metrics(None, dict.fromkeys(self.about.objectives, 0.0)))
        views = study_view_tags(self.about.params, direction=self.about.direction, extra_metrics=per_objective)
        self.experiment_id = open_experiment(
            self.client, self.study_name, artifact_location=(self.artifact_root / self.study_name).as_uri(),
            description=self.about.text, tags={"dhns.study": self.study_name, **views})
        parents = self._parents()
        if not parents:
            created = start_run(
                self.client, self.experiment_id, self.study_name, provenance=self.provenance(),
                dataset=self._dataset,
                tags={"dhns.study": self.study_name, "dhns.study_uid": self.study_uid, "dhns.role": "parent"})
            parents = self._parents()
            # two processes may have created a parent at the same moment: keep the oldest only
            for extra in parents[1:]:
                if extra.info.run_id == created:
                    self.client.delete_run(extra.info.run_id)
            parents = parents[:1]
        self.parent_run_id = parents[0].info.run_id
        self.client.update_run(self.parent_run_id, status="RUNNING")
        self.set_parent_tags({**self.provenance(), **self.about.extra_tags, **(tags or {})})
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

    def close_retried(self, number: int, retry: int) -> None:
        """Trial ``number`` is continued by trial ``retry``: its run is tagged ``dhns.retried_by`` and, if
        its process died with it RUNNING, ended KILLED."""
        flt = (f"tags.`mlflow.parentRunId` = {_quote(self._require_parent())} "
               f"and tags.`dhns.trial_number` = '{int(number)}'")
        for run in self.client.search_runs([self.experiment_id], filter_string=flt, max_results=10):
            self.client.set_tag(run.info.run_id, "dhns.retried_by", str(retry))
            if run.info.status == "RUNNING":
                TrialRun(self.client, run.info.run_id, number).end(
                    "INTERRUPTED", reason=f"its worker stopped; continued by trial {retry}")

    def log_parent_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        log_metrics(self.client, self._require_parent(), metrics, step)

    def set_parent_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            self.client.log_batch(self._require_parent(), tags=_tags(tags))

    def set_parent_description(self, markdown: str) -> None:
        """The parent run's description (shown at the top of its page): the leaderboard."""
        self.client.set_tag(self._require_parent(), DESCRIPTION_TAG, markdown)

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
    def start_trial(self, number: int, params: Mapping[str, str], tags: Mapping[str, Any] | None = None, *,
                    searched: Mapping[str, str] | None = None) -> TrialRun:
        """Create the child run of trial ``number`` with its provenance and dataset.  ``params`` is the
        flattened configuration; with ``searched`` (parameter name -> value as text) the searched parameters
        come first and the rest goes under :data:`CONFIG_PREFIX` (:func:`ordered_params`)."""
        parent = self._require_parent()
        all_tags = {
            "dhns.study": self.study_name,
            "dhns.study_uid": self.study_uid,
            "dhns.role": "trial",
            "dhns.trial_number": str(number),
            "dhns.state": "RUNNING",
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        run_id = start_run(self.client, self.experiment_id, f"trial-{number:04d}", tags=all_tags,
                           provenance=self.provenance(), dataset=self._dataset, parent_run_id=parent)
        child = TrialRun(self.client, run_id, number, policy_metric=self.about.metric,
                         metric_set=self.about.metric_set)
        try:
            child.log_params(params if searched is None else
                             ordered_params(searched, params, space=self.about.params))
        except BaseException:
            child.end("FAIL", reason="could not log the parameters")
            raise
        return child
