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
  sorted by creation time: sorted by a metric it lists every run flat.  Hence three views per study:

  ``dhns-leaderboard``
      the objective, the searched parameters, the trial state, the best epoch and the epoch time, sorted
      by the objective (best first): every trial and replay, flat.  This is what ``ui`` links to.
  ``dhns-trials``
      the same columns in creation order: the trial runs nested under the study's parent run (click
      ``+`` on the parent to unfold them).
  ``dhns-compare``
      the leaderboard's table next to charts that compare the trials (the link adds
      ``compareRunsMode=CHART``, which the state cannot hold): the objective against each searched
      parameter, the parallel coordinates of the searched parameters and the objective, and the
      validation curves (``valid_mrr`` per epoch).  ``ui`` prints this link too.

- **Charts.** The chart view's cards are the state's ``compareRunCharts`` (a list) in the accordion sections
  of ``compareRunSections``; each card has ``uuid``, ``type`` (``SCATTER``, ``PARALLEL``, ``LINE``, ...),
  ``metricSectionId`` (its section's ``uuid``), ``runsCountToCompare``, ``deleted``, ``isGenerated`` and
  ``displayName``, and by type: ``xaxis`` / ``yaxis`` = ``{"key", "type": "METRIC" | "PARAM"}``;
  ``selectedParams`` / ``selectedMetrics`` / ``showAllRuns``; ``metricKey`` / ``xAxisKey`` (``step``) and
  the line options.  On every load the UI adds a generated card for each logged metric that no card shows,
  in the section named after the metric's prefix (``Model metrics`` for a name without ``/``): the view
  names that section itself, folded, so the generated cards stay out of the way.  The parallel coordinates
  leave out every run that lacks one of its parameters, so they get only the parameters that every trial
  has (a conditional parameter, absent when its condition is false, gets its own scatter chart only).
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Sequence
from urllib.parse import urlencode

__all__ = [
    "COMPARE_VIEW",
    "EXPERIMENT_KIND_TAG",
    "LEADERBOARD_VIEW",
    "MODEL_TRAINING_KIND",
    "OBJECTIVE_METRIC",
    "SHARED_VIEW_PREFIX",
    "TRIALS_VIEW",
    "VALIDATION_CURVE",
    "compare_charts",
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
COMPARE_VIEW = "dhns-compare"
#: the validation metric every trial logs per evaluation (step = epoch) whatever its objective
VALIDATION_CURVE = "valid_mrr"
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


def _card(uuid: str, kind: str, section: str, title: str, **fields) -> dict:
    """A chart card of the chart view (see the module docstring)."""
    return {"uuid": uuid, "type": kind, "metricSectionId": section, "runsCountToCompare": 100, "deleted": False,
            "isGenerated": False, "displayName": title, **fields}


def _section(uuid: str, name: str, *, display: bool = True) -> dict:
    return {"uuid": uuid, "name": name, "display": display, "isReordered": False, "deleted": False,
            "isGenerated": False}


def compare_charts(params: Sequence[str], *, conditional: Sequence[str] = ()) -> tuple[list[dict], list[dict]]:
    """``(compareRunCharts, compareRunSections)`` of the comparison view: a scatter chart of the objective
    against each parameter of ``params``, the parallel coordinates of the parameters that are not
    ``conditional`` and the objective, the validation curves; then the UI's own sections, folded."""
    search, curves = "dhns-search-section", "dhns-curves-section"
    charts = [_card(f"dhns-scatter-{p}", "SCATTER", search, f"{OBJECTIVE_METRIC} vs {p}",
                    xaxis={"key": p, "type": "PARAM"}, yaxis={"key": OBJECTIVE_METRIC, "type": "METRIC"})
              for p in params]
    always = [p for p in params if p not in set(conditional)]
    if always:
        charts.append(_card("dhns-parallel", "PARALLEL", search, "searched parameters and the objective",
                            selectedParams=always, selectedMetrics=[OBJECTIVE_METRIC], showAllRuns=True))
    charts.append(_card("dhns-valid-curves", "LINE", curves, f"{VALIDATION_CURVE} per epoch",
                        metricKey=VALIDATION_CURVE, selectedMetricKeys=[VALIDATION_CURVE], xAxisKey="step",
                        useGlobalXaxisKey=False, lineSmoothness=0, useGlobalLineSmoothing=False,
                        scaleType="linear", xAxisScaleType="linear", yAxisKey="metric", yAxisExpressions=[],
                        ignoreOutliers=False, selectedXAxisMetricKey="",
                        range={"xMin": None, "xMax": None, "yMin": None, "yMax": None}))
    sections = [_section(search, "Objective against the searched parameters"),
                _section(curves, "Validation curves"),
                _section("dhns-model-metrics", "Model metrics", display=False),
                _section("dhns-system-metrics", "System metrics", display=False)]
    return charts, sections


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
                    conditional: Sequence[str] = (), now_ms: int | None = None) -> dict[str, str]:
    """The experiment tags of a study's three saved views (see the module docstring).

    ``params`` are the searched parameters in the space's order (``conditional``: those searched only
    when a condition holds), ``direction`` that of the primary objective (``maximize`` sorts the
    leaderboard descending), ``extra_metrics`` the other objectives.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    board = view_state(params, extra_metrics=extra_metrics, order_by=OBJECTIVE_METRIC,
                       ascending=direction == "minimize")
    nested = view_state(params, extra_metrics=extra_metrics)
    charts, sections = compare_charts(params, conditional=conditional)
    compare = {**board, "compareRunCharts": charts, "compareRunSections": sections, "isAccordionReordered": True}
    return {
        SHARED_VIEW_PREFIX + COMPARE_VIEW: _tag_value("comparison charts (objective against the parameters)",
                                                      compare, now + 2),
        SHARED_VIEW_PREFIX + LEADERBOARD_VIEW: _tag_value("leaderboard (objective, searched parameters)", board,
                                                          now + 1),
        SHARED_VIEW_PREFIX + TRIALS_VIEW: _tag_value("trials under the study run", nested, now),
    }


def runs_url(base_url: str, experiment_id: str, view: str | None = LEADERBOARD_VIEW) -> str:
    """The link to an experiment's runs table in the model-training pages, opening ``view`` (None: the
    plain table); the comparison view opens on its charts."""
    query = {"workflowType": "machine_learning"}
    if view:
        query["viewStateShareKey"] = view
    if view == COMPARE_VIEW:
        query["compareRunsMode"] = "CHART"
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"
