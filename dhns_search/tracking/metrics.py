"""Which metrics an MLflow run gets, under which names: pure functions, no mlflow.

The evaluator reports every rank metric three times (optimistic, pessimistic, realistic ranks), for both
directions together and per direction: 30 numbers per evaluation.  A run logs the **lean set** by default:

- ``valid_mrr``, ``valid_mr``, ``valid_hits_at_1``, ``valid_hits_at_3``, ``valid_hits_at_10`` at every
  evaluation (step = epoch), for the rank policy of ``train.metric`` (the run's tag ``dhns.rank_policy``
  says which), so the same short names mean the same thing in every study;
- the trainer's epoch statistics (``train_loss``, ``kgc_loss``, ``ha_loss``, ``diffusion_loss``,
  ``epoch_seconds``) and ``eval_seconds``;
- at the end ``objective`` (the primary objective, see :data:`~dhns_search.tracking.views.OBJECTIVE_METRIC`),
  ``best_epoch`` and the measurements.

``full`` (``run --mlflow-metrics full``) logs every validation metric under ``valid_<full name>`` as
well; the full breakdown of the best epoch is in every run's ``result.json`` artifact in any case.

A completed run also logs the lean set of its **best epoch** (the epoch whose checkpoint is kept and whose
``train.metric`` is the objective) as ``best_valid_<name>``: the last value of a ``valid_*`` curve is the
last epoch's, which is not what the objective reports.

Every metric is logged to :data:`DIGITS` significant digits (:func:`rounded`): what a table or a chart
shows; the exact values are in ``result.json`` and in the Optuna storage.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["BEST_PREFIX", "DIGITS", "METRIC_SETS", "RANK_BASES", "best_validation_metrics", "name_metrics",
           "objective_title", "rank_policy", "rounded", "validation_metrics"]

METRIC_SETS = ("lean", "full")
RANK_BASES = ("mrr", "mr", "hits_at_1", "hits_at_3", "hits_at_10")
#: significant digits of a logged metric (the integer part is always kept)
DIGITS = 4
#: the best epoch's validation metrics: ``best_valid_mrr`` ...
BEST_PREFIX = "best_"
_FULL_NAME = re.compile(r"^(?:head_|tail_)?(?:mrr|mr|hits_at_\d+)_(?P<policy>optimistic|pessimistic|realistic)"
                        r"_filtered$")


def rank_policy(metric: str) -> str:
    """The rank policy of a metric name (``mrr_optimistic_filtered`` -> ``optimistic``); realistic when the
    name carries none."""
    m = _FULL_NAME.match(metric)
    return m.group("policy") if m else "realistic"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validation_metrics(metrics: Mapping[str, Any], policy_metric: str, *, metric_set: str = "lean"
                       ) -> dict[str, float]:
    """The validation metrics a run logs (see the module docstring); ``policy_metric`` is ``train.metric``."""
    if metric_set not in METRIC_SETS:
        raise ValueError(f"metric set {metric_set!r}: use one of {', '.join(METRIC_SETS)}")
    policy = rank_policy(policy_metric)
    out = {f"valid_{base}": float(metrics[f"{base}_{policy}_filtered"]) for base in RANK_BASES
           if _number(metrics.get(f"{base}_{policy}_filtered"))}
    if metric_set == "full":
        out.update({f"valid_{k}": float(v) for k, v in metrics.items() if _number(v)})
    return out


def best_validation_metrics(best_valid: Mapping[str, Any], policy_metric: str) -> dict[str, float]:
    """The lean set of the best epoch's validation metrics as ``best_valid_<name>``."""
    return {BEST_PREFIX + k: v for k, v in validation_metrics(best_valid, policy_metric).items()}


def rounded(value: float, digits: int = DIGITS) -> float:
    """``value`` to ``digits`` significant digits, keeping its integer part (0.2314893 -> 0.2315, 571.1289 ->
    571.1, 12345.6 -> 12346.0); integers, NaN and infinities unchanged."""
    if not math.isfinite(value) or value == 0 or float(value).is_integer():
        return value
    return round(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))))


def objective_title(spec: Any) -> str:
    """How plots and optuna-dashboard name an objective (an :class:`~dhns_search.search.objectives.ObjectiveSpec`):
    ``valid mrr (realistic)``, ``valid tail_hits_at_10_optimistic_filtered``, ``epoch_seconds``."""
    if spec.kind != "accuracy":
        return spec.label
    if spec.label != spec.name:
        return f"valid {spec.label} ({rank_policy(spec.name)})"
    return f"valid {spec.name}"


def name_metrics(study: Any, specs: Sequence[Any]) -> None:
    """Give the study's values their names (``study.set_metric_names``), which optuna-dashboard and
    Optuna's plots show instead of "Objective 0"; a study already named so is left alone."""
    names = [objective_title(s) for s in specs]
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning: stable since Optuna 3.2, still marked
            study.set_metric_names(names)
