"""Tracking: everything this package writes to (and serves from) MLflow, and the only package that imports
mlflow.  One job per module:

=================  ==========================================================================
``store``          the tracking store checked before anything is written (light)
``tracker``        the interface every writer uses: :class:`Tracker` (a store) and :class:`RunLog` (a run)
``study``          a study's experiment, parent run and trial runs (:class:`MlflowBridge`)
``train_runs``     ``dhns-search train``: final runs and replays of exported trials
``views``          saved views of a study's runs table, and the links to them (light)
``metrics``        which metrics a run logs, under which names (light)
``provenance``     versions, git revision, device, a dataset's summary (light)
``ui``             ``dhns-search ui``: the MLflow UI in its own session, its port, links, a clean stop
=================  ==========================================================================

The three writers (a study's trials in :mod:`.study`, ``train`` runs in :mod:`.train_runs`, ``compare`` in
:mod:`dhns_search.ablation.tracking`) log through :mod:`.tracker`; the search and ablation packages call
them.  The layer imports the core (configs, data, training) and never optuna, typer, the search, ablation
or command-line packages.  Modules marked light import no mlflow, so the command line can read their
defaults (``import dhns_search.tracking`` itself stays light: the rest loads on first use).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# No network from a library: MLflow's usage telemetry stays off unless the user turned it on explicitly
# (set before any module of this package can import mlflow).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowBridge",
    "RunLog",
    "RunRecord",
    "StudyDescription",
    "Tracker",
    "TrialRun",
    "is_store_failure",
    "open_store",
    "serve_ui",
    "train_tracked",
]

_LAZY = {
    "DEFAULT_TRACKING_URI": "dhns_search.tracking.store",
    "is_store_failure": "dhns_search.tracking.store",
    "open_store": "dhns_search.tracking.store",
    "Tracker": "dhns_search.tracking.tracker",
    "RunLog": "dhns_search.tracking.tracker",
    "RunRecord": "dhns_search.tracking.tracker",
    "MlflowBridge": "dhns_search.tracking.study",
    "StudyDescription": "dhns_search.tracking.study",
    "TrialRun": "dhns_search.tracking.study",
    "train_tracked": "dhns_search.tracking.train_runs",
    "serve_ui": "dhns_search.tracking.ui",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dhns_search.tracking' has no attribute {name!r}")
