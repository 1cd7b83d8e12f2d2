"""The MLflow bridge: a study's experiment, its parent run and one child run per trial, over the
:class:`~.tracker.Tracker` (what the parent receives is decided in :mod:`dhns_search.search.publish`).

Layout in the tracking store (one experiment per study, named after it)::

    experiment <study>               tags mlflow.experimentKind (model training), mlflow.note.content (the
    │                                space's description), two saved views of the runs table (:mod:`.views`)
    ├── parent run  "<study>"        tags dhns.study, dhns.study_uid, dhns.role=parent; description = leaderboard
    │     artifacts: space file, leaderboard.csv/.md, best_config.yaml, plots/*.png, plots/interactive.html
    │     metrics:   best_value (step = trial number), n_complete ...
    └── child runs  "trial-0007"     tags mlflow.parentRunId, dhns.study, dhns.trial_number, dhns.state
          params:    the searched parameters, then the rest of the configuration as zconfig.<path>
          metrics:   valid_* (lean set, :mod:`.metrics`) per evaluation, train_* per epoch, objective
          artifacts: config.yaml, result.json

Every run (parent, trials, replays) carries its provenance (:meth:`.Tracker.start_run`): package versions, git
revision, device and its name, and the dataset as an MLflow dataset input.  The parent is found again by
its tags when a study continues (also from another process), so a study has exactly one parent.  Every
child is ended, whatever happened to its trial: FINISHED for a completed *or pruned* trial (tag
``dhns.state`` says which; a pruned one has ``dhns.pruned_epoch`` / ``dhns.pruned_value``), FAILED for a
failed one (the reason as tag ``dhns.fail_reason`` and as the run's description), KILLED on Ctrl-C.

The writers' interface (:class:`~.tracker.Tracker`, :class:`~.tracker.RunLog`) is in :mod:`.tracker`;
optuna-integration's ``MLflowCallback`` is not used: it logs only final values and makes no parent run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhns_search.tracking.metrics import RANK_BASES, best_validation_metrics, rank_policy, validation_metrics
from dhns_search.tracking.provenance import DatasetSummary, dataset_summary, run_provenance
from dhns_search.tracking.tracker import DESCRIPTION_TAG, RunLog, Tracker, ordered_params
from dhns_search.tracking.views import OBJECTIVE_METRIC, study_view_tags

__all__ = [
    "MLFLOW_STATUS",
    "PLOTS_TAG",
    "MlflowBridge",
    "StudyDescription",
    "TrialRun",
    "objective_metrics",
    "trial_run_name",
]

#: Optuna trial state -> MLflow run status.  A pruned trial ran as the pruner meant it to: FINISHED.
MLFLOW_STATUS = {
    "COMPLETE": "FINISHED",
    "PRUNED": "FINISHED",
    "FAIL": "FAILED",
    "INTERRUPTED": "KILLED",  # Ctrl-C: Optuna records FAIL, MLflow says the run was killed
    "RUNNING": "RUNNING",
}


#: the parent run's tag naming its page of interactive plots (``plots/interactive.html``)
PLOTS_TAG = "dhns.plots"

#: what a trial's run name says after its number, by state (a completed trial's name is the bare number)
_NAME_STATE = {"RUNNING": "running", "PRUNED": "pruned", "FAIL": "failed", "INTERRUPTED": "interrupted"}


def trial_run_name(number: int, state: str | None = None) -> str:
    """``trial-0007``, or ``trial-0007 (pruned)``: the state next to the number, so that the first column of
    the runs table tells a pruned, failed or running trial from a completed one."""
    suffix = _NAME_STATE.get(state or "")
    return f"trial-{number:04d}" + (f" ({suffix})" if suffix else "")


def best_summary(best_valid: Mapping[str, Any], policy_metric: str) -> str:
    """``mrr 0.2315, mr 10.98, hits@1 0.125 ...``: the lean metrics of an epoch, in words."""
    policy = rank_policy(policy_metric)
    parts = []
    for base in RANK_BASES:
        value = best_valid.get(f"{base}_{policy}_filtered")
        if isinstance(value, (int, float)):
            parts.append(f"{base.replace('_at_', '@')} {value:.4g}")
    return ", ".join(parts)


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

    tracker: Tracker
    run_id: str
    number: int
    #: ``train.metric``: its rank policy chooses the lean validation metrics
    policy_metric: str = "mrr_realistic_filtered"
    metric_set: str = "lean"

    @property
    def run(self) -> RunLog:
        return self.tracker.run(self.run_id)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log numeric values with ``step`` (non-numbers are skipped)."""
        self.run.log_metrics(metrics, step)

    def log_validation(self, metrics: Mapping[str, Any], step: int, *, eval_seconds: float | None = None) -> None:
        """One evaluation's validation metrics (the lean or full set, :mod:`.metrics`) at ``step``."""
        logged: dict[str, Any] = validation_metrics(metrics, self.policy_metric, metric_set=self.metric_set)
        if eval_seconds is not None:
            logged["eval_seconds"] = eval_seconds
        self.log_metrics(logged, step)

    def log_progress(self, best: float, step: int) -> None:
        """While the trial runs: ``objective`` = the best validation value so far (the run is RUNNING, its
        name says so), so the leaderboard has its objective column from the first evaluation on."""
        self.log_metrics({OBJECTIVE_METRIC: best}, step)

    def log_result(self, value: float | None, *, best_epoch: int, values: Mapping[str, float] | None = None,
                   result: Mapping[str, Any] | None = None, best_valid: Mapping[str, Any] | None = None) -> None:
        """The trial's outcome: ``objective`` (and ``objective.<label>`` with several objectives),
        ``best_epoch`` and the best epoch's lean validation metrics ``best_valid_*`` at step = best epoch,
        and a description that says them; ``result`` (the full validation breakdown ...) as result.json."""
        best = best_validation_metrics(best_valid or {}, self.policy_metric)
        self.log_metrics({**objective_metrics(value, values), "best_epoch": best_epoch, **best}, step=best_epoch)
        if result is not None:
            self.log_text(json.dumps(result, indent=1, default=str), "result.json")
        history = (result or {}).get("history") or []
        last = history[-1].get("epoch") if history else None
        text = f"**Complete.** Best epoch {best_epoch}" + (f" of {last}" if last else "")
        if best_valid:
            text += (f": valid {best_summary(best_valid, self.policy_metric)} (`best_valid_*`, "
                     f"{rank_policy(self.policy_metric)} ranks); the `valid_*` curves run to epoch {last or best_epoch}.")
        if values and len(values) > 1:
            text += " Objectives: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()) + "."
        self.describe(text)

    def describe(self, markdown: str) -> None:
        self.run.describe(markdown)

    def log_params(self, params: Mapping[str, str]) -> None:
        self.run.log_params(params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.run.set_tags(tags)

    def log_text(self, text: str, name: str) -> None:
        self.run.log_text(text, name)

    def end(self, state: str, *, value: float | None = None, reason: str | None = None,
            epoch: int | None = None) -> None:
        """End the run: ``state`` is an Optuna state name (COMPLETE, PRUNED, FAIL, INTERRUPTED); ``value``
        and ``epoch`` of a pruned trial are its last reported value and the epoch it was pruned at."""
        tags: dict[str, Any] = {"dhns.state": state}
        has_value = value is not None and not math.isnan(value)
        if state == "PRUNED":
            tags["dhns.pruned_epoch"] = epoch
            tags["dhns.pruned_value"] = repr(float(value)) if has_value else None
            shown = f" (its {self.policy_metric} was {value:.4f})" if has_value else ""
            at = "" if epoch is None else f" at epoch {epoch}"
            tags[DESCRIPTION_TAG] = f"**Pruned**{at}{shown}: the pruner stopped it, so it has no objective."
            tags["dhns.reason"] = reason
        elif state in ("FAIL", "INTERRUPTED") and reason:
            tags["dhns.fail_reason"] = reason
            tags[DESCRIPTION_TAG] = f"**{'Failed' if state == 'FAIL' else 'Interrupted'}**: {reason}"
        elif has_value:
            tags["dhns.value"] = repr(float(value))
        try:
            self.set_tags(tags)
            if state != "COMPLETE":
                self._no_objective()
            if self.number >= 0:
                self.run.rename(trial_run_name(self.number, state))
        finally:  # a store that takes no more tags may still end the run: not left RUNNING
            self.run.end(MLFLOW_STATUS.get(state, "FAILED"))

    def _no_objective(self) -> None:
        """A trial that did not complete has no objective: the best value so far that it logged while
        running (:meth:`log_progress`) is followed by NaN, which the leaderboard sorts after every value."""
        last = self.run.last_logged(OBJECTIVE_METRIC)
        if last is not None:
            step, at = last
            self.run.log_metrics({OBJECTIVE_METRIC: math.nan}, step, timestamp_ms=max(at + 1, int(time.time() * 1000)))


@dataclass
class StudyDescription:
    """What the experiment and every run of a study are told besides the study's name."""

    text: str | None = None  # the space's description
    params: Sequence[str] = ()  # the searched parameters, in the space's order
    conditional: Sequence[str] = ()  # those of ``params`` searched only when a condition holds
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
        self.tracker = Tracker(tracking_uri, artifact_root=artifact_root)
        self.tracking_uri = self.tracker.uri
        self.study_name = study_name
        self.study_uid = study_uid
        self.artifact_root = self.tracker.artifact_root
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.about = StudyDescription()
        self._provenance: dict[str, str] | None = None
        self._dataset: DatasetSummary | None = None
        #: the parent's page of interactive plots (artifact path), once published (tag :data:`PLOTS_TAG`)
        self.plots_page: str | None = None

    # ------------------------------------------------------------------------------ study level
    def _parents(self) -> list:
        assert self.experiment_id is not None
        return self.tracker.find_runs(self.experiment_id, {"dhns.study": self.study_name, "dhns.role": "parent",
                                                           "dhns.study_uid": self.study_uid})

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
        views = study_view_tags(self.about.params, direction=self.about.direction, extra_metrics=per_objective,
                                conditional=self.about.conditional)
        self.experiment_id = self.tracker.experiment(self.study_name, description=self.about.text,
                                                     tags={"dhns.study": self.study_name, **views})
        parents = self._parents()
        if not parents:
            created = self.tracker.start_run(
                self.experiment_id, self.study_name, provenance=self.provenance(), dataset=self._dataset,
                tags={"dhns.study": self.study_name, "dhns.study_uid": self.study_uid, "dhns.role": "parent"})
            parents = self._parents()
            # two processes may have created a parent at the same moment: keep the oldest only
            for extra in parents[1:]:
                if extra.run_id == created.run_id:
                    self.tracker.delete_run(extra.run_id)
            parents = parents[:1]
        self.parent_run_id = parents[0].run_id
        self.plots_page = parents[0].tags.get(PLOTS_TAG)  # a continued study: the page of an earlier run
        self.parent.mark_running()
        self.set_parent_tags({**self.provenance(), **self.about.extra_tags, **(tags or {})})
        return self.parent_run_id

    def _require_parent(self) -> str:
        if self.parent_run_id is None:
            raise RuntimeError("start_study() must be called first")
        return self.parent_run_id

    @property
    def parent(self) -> RunLog:
        """The study's parent run (:meth:`start_study` first)."""
        return self.tracker.run(self._require_parent())

    def children(self, status: str | None = None) -> list:
        """The child runs of this study's parent (optionally only those with ``status``)."""
        assert self.experiment_id is not None
        return self.tracker.find_runs(self.experiment_id, {"mlflow.parentRunId": self._require_parent()},
                                      status=status)

    def reconcile(self, trial_states: Mapping[int, str]) -> int:
        """End child runs left RUNNING by a crashed process whose trial is over; returns how many."""
        fixed = 0
        for run in self.children(status="RUNNING"):
            try:
                number = int(run.tags.get("dhns.trial_number", ""))
            except ValueError:
                continue
            state = trial_states.get(number)
            if state is not None and state != "RUNNING":
                reason = "the process running this trial stopped; state taken from the study"
                TrialRun(self.tracker, run.run_id, number).end(state, reason=reason)
                fixed += 1
        return fixed

    def close_retried(self, number: int, retry: int) -> None:
        """Trial ``number`` is continued by trial ``retry``: its run is tagged ``dhns.retried_by`` and, if
        its process died with it RUNNING, ended KILLED."""
        assert self.experiment_id is not None
        found = self.tracker.find_runs(self.experiment_id, {"mlflow.parentRunId": self._require_parent(),
                                                            "dhns.trial_number": int(number)}, limit=10)
        for run in found:
            trial = TrialRun(self.tracker, run.run_id, number)
            trial.set_tags({"dhns.retried_by": retry})
            if run.status == "RUNNING":
                trial.end("INTERRUPTED", reason=f"its worker stopped; continued by trial {retry}")

    def log_parent_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self.parent.log_metrics(metrics, step)

    def set_parent_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            self.parent.set_tags(tags)

    def set_parent_description(self, markdown: str) -> None:
        """The parent run's description (shown at the top of its page): the leaderboard."""
        self.parent.describe(markdown)

    def parent_artifact_link(self, path: str) -> str:
        """A link for the parent run's description that opens its artifact ``path`` (``plots/x.html``) on
        the run's *Artifacts* tab, previewed: MLflow 3's route ``#/experiments/E/runs/R/artifacts/PATH``."""
        assert self.experiment_id is not None
        return f"#/experiments/{self.experiment_id}/runs/{self._require_parent()}/artifacts/{path}"

    def plots_published(self, path: str) -> None:
        """The parent now holds its interactive plots at ``path``: tag :data:`PLOTS_TAG`, so that the
        description links to them from now on, also while a later run continues the study."""
        self.set_parent_tags({PLOTS_TAG: path})
        self.plots_page = path

    def plots_link(self) -> str | None:
        """The description's link to the interactive plots, or None before they are published."""
        return self.parent_artifact_link(self.plots_page) if self.plots_page else None

    def log_parent_text(self, text: str, name: str) -> None:
        self.parent.log_text(text, name)

    def log_parent_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.parent.log_file(path, artifact_path)

    def log_parent_files(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        for p in paths:
            self.log_parent_file(p, artifact_path)

    def end_study(self, status: str = "FINISHED") -> None:
        """End the parent run (``FINISHED``, ``KILLED`` or ``FAILED``)."""
        self.parent.end(status)

    # ------------------------------------------------------------------------------ trial level
    def start_trial(self, number: int, params: Mapping[str, str], tags: Mapping[str, Any] | None = None, *,
                    searched: Mapping[str, str] | None = None) -> TrialRun:
        """Create the child run of trial ``number`` (named ``trial-0007 (running)`` until it ends) with its
        provenance and dataset; a tag whose value is None is left out.  ``params`` is the flattened
        configuration; with ``searched`` (parameter name -> value as text, :func:`~.tracker.searched_params`)
        the searched parameters come first and the rest follows under :data:`~.tracker.CONFIG_PREFIX`
        (:func:`~.tracker.ordered_params`)."""
        assert self.experiment_id is not None
        parent = self._require_parent()
        all_tags = {
            "dhns.study": self.study_name,
            "dhns.study_uid": self.study_uid,
            "dhns.role": "trial",
            "dhns.trial_number": str(number),
            "dhns.state": "RUNNING",
            **{k: str(v) for k, v in (tags or {}).items() if v is not None},
        }
        run_id = self.tracker.start_run(self.experiment_id, trial_run_name(number, "RUNNING"), tags=all_tags,
                                        provenance=self.provenance(), dataset=self._dataset, parent=parent).run_id
        child = TrialRun(self.tracker, run_id, number, policy_metric=self.about.metric,
                         metric_set=self.about.metric_set)
        try:
            child.log_params(params if searched is None else
                             ordered_params(searched, params, space=self.about.params))
        except BaseException:
            child.end("FAIL", reason="could not log the parameters")
            raise
        return child
