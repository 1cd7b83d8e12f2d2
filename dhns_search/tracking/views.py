"""What the MLflow UI opens on: a study's runs table as saved views, and the links to them.

Light on purpose (no mlflow, no optuna): ``dhns-search ui`` builds its links from here.

How MLflow 3's UI decides what to show (read from MLflow 3.17's server bundle):

- **GenAI or model training.** The UI shows its GenAI pages (Overview, Traces) or its model-training pages
  (Runs, Models) by its *workflow type*: the URL parameter ``workflowType=machine_learning`` (or
  ``genai``), else the user's last choice of the sidebar toggle (kept in the browser), else GenAI.  MLflow
  3 releases before that toggle read the experiment tag ``mlflow.experimentKind`` instead
  (``custom_model_development`` = model training), which the experiment header still shows and edits.
  So a study's experiment gets that tag, every link carries ``workflowType=machine_learning``, and the
  page that ``dhns-search ui`` serves stores model training as the browser's choice when it has none
  (:mod:`.ui_app`): the links inside MLflow's UI (a run's name, Compare) drop the URL parameter.
- **Saved views.** A view of the runs table (columns, sort, filter, what the charts show) is an experiment
  tag ``mlflow.sharedViewState.<key>`` holding ``{"name", "createdAt", "updatedAt", "state"}``, the state
  as ``deflate;`` + base64 of the zlib-compressed JSON; ``?viewStateShareKey=<key>`` opens it, and the
  runs page lists it under *Views*.  The state cannot expand a parent run (MLflow leaves the expanded
  rows out of a shared state), and the runs table nests child runs under their parent only while it is
  sorted by creation time: sorted by a metric it lists every run flat.  Hence two views per study:

  ``dhns-leaderboard``
      the objective, the searched parameters, the trial state, the best epoch and the epoch time, sorted
      by the objective (best first): every trial and replay, flat.  This is what ``ui`` links to.
  ``dhns-trials``
      the same columns in creation order: the trial runs nested under the study's parent run (click
      ``+`` on the parent to unfold them).
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Sequence
from urllib.parse import urlencode

__all__ = [
    "EXPERIMENT_KIND_TAG",
    "LEADERBOARD_VIEW",
    "MODEL_TRAINING_KIND",
    "OBJECTIVE_METRIC",
    "SHARED_VIEW_PREFIX",
    "TRIALS_VIEW",
    "decode_view",
    "runs_url",
    "study_view_tags",
    "view_state",
]

#: the experiment tag that MLflow 3 releases before the workflow toggle read to choose their pages
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
LEADERBOARD_VIEW = "dhns-leaderboard"
TRIALS_VIEW = "dhns-trials"
#: the metric every trial (and replay) logs its primary objective under, in every study
OBJECTIVE_METRIC = "objective"
_DEFLATE = "deflate;"


def _column(kind: str, key: str) -> str:
    """A runs-table column as MLflow names it: ``metrics.`objective```, ``params.`train.lr```."""
    return f"{kind}.`{key}`"


def view_state(params: Sequence[str], *, extra_metrics: Sequence[str] = (), order_by: str | None = None,
               ascending: bool = False) -> dict:
    """The state of a runs-table view: the objective, ``extra_metrics`` and ``params`` as columns, the trial
    state, best epoch and epoch time; sorted by the metric ``order_by`` (None: creation time, newest first)."""
    columns = [_column("metrics", OBJECTIVE_METRIC), *(_column("metrics", m) for m in extra_metrics),
               *(_column("params", p) for p in params), _column("tags", "dhns.state"),
               _column("metrics", "best_epoch"), _column("metrics", "mean_epoch_seconds")]
    return {
        "searchFilter": "",
        "orderByKey": _column("metrics", order_by) if order_by else "attributes.start_time",
        "orderByAsc": bool(ascending) if order_by else False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
        "columnOrder": columns,  # the table shows the selected columns in this order
        "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL",  # charts show every run, not the first 10
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def _tag_value(name: str, state: dict, now_ms: int) -> str:
    packed = _DEFLATE + base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
    return json.dumps({"name": name, "createdAt": now_ms, "updatedAt": now_ms, "state": packed})


def decode_view(value: str) -> tuple[str, dict]:
    """``(name, state)`` of a saved-view tag value (the inverse of what :func:`study_view_tags` writes)."""
    data = json.loads(value)
    packed = data["state"]
    raw = zlib.decompress(base64.b64decode(packed[len(_DEFLATE):])) if packed.startswith(_DEFLATE) else packed
    return data["name"], json.loads(raw)


def study_view_tags(params: Sequence[str], *, direction: str, extra_metrics: Sequence[str] = (),
                    now_ms: int | None = None) -> dict[str, str]:
    """The experiment tags of a study's two saved views (see the module docstring).

    ``params`` are the searched parameters in the space's order, ``direction`` that of the primary
    objective (``maximize`` sorts the leaderboard descending), ``extra_metrics`` the other objectives.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    board = view_state(params, extra_metrics=extra_metrics, order_by=OBJECTIVE_METRIC,
                       ascending=direction == "minimize")
    nested = view_state(params, extra_metrics=extra_metrics)
    return {
        SHARED_VIEW_PREFIX + LEADERBOARD_VIEW: _tag_value("leaderboard (objective, searched parameters)", board,
                                                          now + 1),
        SHARED_VIEW_PREFIX + TRIALS_VIEW: _tag_value("trials under the study run", nested, now),
    }


def runs_url(base_url: str, experiment_id: str, view: str | None = LEADERBOARD_VIEW) -> str:
    """The link to an experiment's runs table in the model-training pages, opening ``view`` (None: the
    plain table)."""
    query = {"workflowType": "machine_learning"}
    if view:
        query["viewStateShareKey"] = view
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"
