"""The one interface through which every writer logs runs: a :class:`Tracker` on a tracking store and the
:class:`RunLog` of one run in it, over MLflow's :class:`~mlflow.tracking.MlflowClient`.

Three writers use it, and nothing else in the package talks to MLflow:

- a study (:mod:`.study`): its experiment, its parent run found again by its tags, a run per trial;
- ``dhns-search train`` (:mod:`.train_runs`): final runs and replays of exported trials;
- ``dhns-search compare`` (:mod:`dhns_search.ablation.tracking`): a comparison of arms over seeds.

In the spirit of PyKEEN's result trackers the interface is small: a writer opens an experiment, finds runs
by their tags or starts one (with its provenance and its dataset as an input), and logs params, metrics,
tags, a description, text and files to it before ending it.  What the runs *mean* is the writers' business.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dhns_search.config.flat import format_value
from dhns_search.files import sqlite_path
from dhns_search.tracking.metrics import rounded
from dhns_search.tracking.provenance import DatasetSummary, dataset_summary, run_provenance
from dhns_search.tracking.store import open_store
from dhns_search.tracking.views import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND

__all__ = [
    "CONFIG_PREFIX",
    "DESCRIPTION_TAG",
    "RunLog",
    "RunRecord",
    "Tracker",
    "artifact_root_for",
    "ordered_params",
    "searched_params",
]

#: the description of a run or an experiment (markdown, shown at the top of its page)
DESCRIPTION_TAG = "mlflow.note.content"
#: the configuration fields that were not searched are params under this prefix (sorting after the rest)
CONFIG_PREFIX = "zconfig."

_PARAM_BATCH = 100  # MLflow accepts at most 100 params per log_batch call
_METRIC_BATCH = 1000
_TAG_LIMIT = 5000  # characters kept of a long tag value (MLflow allows 8000)
_PAGE = 1000


def artifact_root_for(uri: str) -> Path:
    """Absolute artifact folder for a tracking URI: ``<db folder>/artifacts`` for SQLite.

    MLflow 3 would otherwise place artifacts relative to the working directory of whichever process
    creates the experiment; an explicit absolute ``file://`` location keeps them in one place.
    """
    path = sqlite_path(uri)
    if path is not None:
        return path.resolve().parent / "artifacts"
    return Path("mlruns/artifacts").resolve()


def searched_params(values: Mapping[str, Any]) -> dict[str, str]:
    """The searched (or overridden) values as params to read in a table: a float to 4 significant digits
    (``0.04970288`` -> ``0.0497``), anything else as the configuration writes it."""
    return {name: format_value(rounded(v) if isinstance(v, float) else v) for name, v in values.items()}


def ordered_params(searched: Mapping[str, str], config: Mapping[str, str], *,
                   space: Sequence[str] = ()) -> dict[str, str]:
    """The params of a run: the searched parameters first (:func:`searched_params`), by their names in the
    space, then every other field of the flattened configuration under :data:`CONFIG_PREFIX` (so they sort
    after them too).

    ``space`` names every parameter of the space: a conditional one that this run did not sample is
    logged neither way, so every run of a study has the same ``zconfig.`` keys (and the Compare page no
    field twice).  The exact values of all of them are in the run's ``config.yaml``."""
    out = {name: str(value) for name, value in searched.items()}
    skip = set(searched) | set(space)
    out.update({CONFIG_PREFIX + key: value for key, value in config.items() if key not in skip})
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tags(tags: Mapping[str, Any]) -> list[RunTag]:
    return [RunTag(k, str(v)[:_TAG_LIMIT]) for k, v in tags.items() if v is not None]


@dataclass(frozen=True)
class RunRecord:
    """A run as found in the store."""

    run_id: str
    name: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    start_time: int | None  # ms
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    experiment_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # each metric's latest value

    @classmethod
    def of(cls, run: Any) -> RunRecord:
        return cls(run.info.run_id, run.info.run_name or "", run.info.status, run.info.start_time,
                   dict(run.data.tags), dict(run.data.params), run.info.experiment_id, dict(run.data.metrics))


class RunLog:
    """One run of the store: what a writer logs to it."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id

    @property
    def _client(self) -> MlflowClient:
        return self.tracker.client

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _PARAM_BATCH):
            self._client.log_batch(self.run_id, params=items[i : i + _PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int, *, timestamp_ms: int | None = None) -> None:
        """Log the numeric values of ``metrics`` at ``step`` (non-numbers are skipped), each to 4 significant
        digits (:func:`~.metrics.rounded`)."""
        ts = _now_ms() if timestamp_ms is None else timestamp_ms
        items = [Metric(key, rounded(float(v)), ts, int(step)) for key, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(items), _METRIC_BATCH):
            self._client.log_batch(self.run_id, metrics=items[i : i + _METRIC_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set ``tags`` (a None value is left out; a long one is cut to 5000 characters)."""
        if tags and (items := _tags(tags)):
            self._client.log_batch(self.run_id, tags=items)

    def describe(self, markdown: str) -> None:
        """The run's description (markdown, shown at the top of its page)."""
        self._client.set_tag(self.run_id, DESCRIPTION_TAG, markdown)

    def rename(self, name: str) -> None:
        """The run's name (the first column of the runs table)."""
        self._client.update_run(self.run_id, name=name)

    def last_logged(self, key: str) -> tuple[int, int] | None:
        """``(step, timestamp in ms)`` of the metric ``key``'s latest value (None: never logged)."""
        history = self._client.get_metric_history(self.run_id, key)
        return max(((m.step, m.timestamp) for m in history), default=None)

    def log_text(self, text: str, name: str) -> None:
        """``text`` as the artifact ``name`` (a path inside the run's artifacts)."""
        self._client.log_text(self.run_id, text, name)

    def log_file(self, path: str | Path, folder: str | None = None) -> None:
        """The file ``path`` as an artifact (in ``folder`` of the run's artifacts)."""
        self._client.log_artifact(self.run_id, str(path), folder)

    def mark_running(self) -> None:
        """RUNNING again (a study or a comparison that continues)."""
        self._client.update_run(self.run_id, status="RUNNING")

    def end(self, status: str = "FINISHED", *, end_ms: int | None = None) -> None:
        """End the run: ``FINISHED``, ``FAILED`` or ``KILLED`` (at ``end_ms``, default now)."""
        self._client.set_terminated(self.run_id, status=status, end_time=end_ms)


class Tracker:
    """A tracking store: experiments, runs found by their tags, new runs with their provenance.

    The store is checked (and a SQLite one created or migrated) before anything is written to it
    (:func:`~.store.open_store`)."""

    def __init__(self, uri: str, *, artifact_root: str | Path | None = None) -> None:
        for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(noisy).setLevel(logging.WARNING)  # MLflow's table-creation chatter
        self.uri = open_store(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        #: where new experiments keep their artifacts (a folder per experiment)
        self.artifact_root = Path(artifact_root).resolve() if artifact_root else artifact_root_for(self.uri)

    # -------------------------------------------------------------------------------- experiments
    def experiment(self, name: str, *, description: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> str:
        """Find or create the experiment ``name`` (restoring a deleted one, artifacts under
        :attr:`artifact_root`) as a model-training experiment, with ``description`` and ``tags``; returns
        its id."""
        client = self.client
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = client.create_experiment(name, artifact_location=(self.artifact_root / name).as_uri())
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

    def experiments(self) -> list[tuple[str, str, dict[str, str]]]:
        """``(id, name, tags)`` of every active experiment."""
        return [(e.experiment_id, e.name, dict(e.tags)) for e in self.client.search_experiments(max_results=1000)]

    # -------------------------------------------------------------------------------------- runs
    def find_runs(self, experiment_id: str, tags: Mapping[str, Any] | None = None, *, status: str | None = None,
                  limit: int | None = None) -> list[RunRecord]:
        """The runs of the experiment whose tags have these values (and ``status``), oldest first."""
        clauses = [f"tags.`{key}` = {_quote(str(value))}" for key, value in (tags or {}).items()]
        if status:
            clauses.append(f"attributes.status = {_quote(status)}")
        out: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs([experiment_id], filter_string=" and ".join(clauses),
                                           max_results=min(limit or _PAGE, _PAGE), page_token=token)
            out.extend(RunRecord.of(r) for r in page)
            token = page.token
            if not token or (limit is not None and len(out) >= limit):
                break
        return sorted(out[:limit] if limit else out, key=lambda r: (r.start_time or 0, r.run_id))

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id`` (an ``MlflowException`` when there is none)."""
        return RunRecord.of(self.client.get_run(run_id))

    def run(self, run_id: str) -> RunLog:
        """The :class:`RunLog` of an existing run."""
        return RunLog(self, run_id)

    def start_run(self, experiment_id: str, name: str, *, tags: Mapping[str, Any] | None = None,
                  parent: str | None = None, dataset: Any = None, provenance: Mapping[str, str] | None = None,
                  device: str | None = "auto", description: str | None = None,
                  start_ms: int | None = None) -> RunLog:
        """Create a run with its provenance (``provenance``, else :func:`~.provenance.run_provenance` of
        ``device``), ``tags``, its ``parent`` run, the dataset as an input and a description."""
        all_tags: dict[str, Any] = dict(provenance if provenance is not None else run_provenance(device))
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        if description:
            all_tags[DESCRIPTION_TAG] = description
        all_tags.update(tags or {})
        run = self.client.create_run(experiment_id, run_name=name, start_time=start_ms,
                                     tags={k: str(v) for k, v in all_tags.items() if v is not None})
        log = RunLog(self, run.info.run_id)
        if dataset is not None:
            self.log_dataset(log.run_id, dataset)
        return log

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def log_dataset(self, run_id: str, dataset: Any, *, context: str = "training") -> None:
        """Log ``dataset`` (a loaded dataset or its :class:`DatasetSummary`) as the run's dataset input: its
        name, where it was read from, the first 16 hex digits of its fingerprint as the digest, and the
        counts (with the full fingerprint) as its profile."""
        summary = dataset if isinstance(dataset, DatasetSummary) else dataset_summary(dataset)
        schema = {"mlflow_colspec": [{"name": c, "type": "long"} for c in ("head", "relation", "tail")]}
        entity = Dataset(name=summary.name, digest=summary.digest, source_type="local",
                         source=json.dumps({"uri": summary.source}), schema=json.dumps(schema),
                         profile=json.dumps(summary.profile))
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])
