"""The search layer: spaces, the Optuna objective, the MLflow bridge, study runs, exports and plots.

It composes the core (``dhns_search.training`` ...) and is the only layer that imports optuna and
mlflow.  Public entry points::

    from dhns_search.search import load_space, suggest, apply, run_study, RunOptions

The heavier modules (the study runner imports MLflow) load on first use, so ``import dhns_search.search``
stays quick for the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

from dhns_search.search.space import SearchSpace, apply, load_space, suggest

__all__ = [
    "MlflowBridge",
    "Objective",
    "RunOptions",
    "SearchSpace",
    "StudySummary",
    "TrialCallback",
    "apply",
    "export_best",
    "list_studies",
    "load_space",
    "open_study",
    "run_study",
    "study_report",
    "suggest",
    "write_plots",
]

_LAZY = {
    "RunOptions": "dhns_search.search.study",
    "StudySummary": "dhns_search.search.study",
    "run_study": "dhns_search.search.study",
    "open_study": "dhns_search.search.study",
    "list_studies": "dhns_search.search.study",
    "study_report": "dhns_search.search.study",
    "export_best": "dhns_search.search.export",
    "MlflowBridge": "dhns_search.search.mlflow_bridge",
    "Objective": "dhns_search.search.objective",
    "TrialCallback": "dhns_search.search.objective",
    "write_plots": "dhns_search.search.plots",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dhns_search.search' has no attribute {name!r}")
