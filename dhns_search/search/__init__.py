"""The search layer: it composes the core (``dhns_search.training`` ...) with Optuna, and logs to MLflow
through :mod:`dhns_search.tracking` (it imports no mlflow itself).  One job per module:

=================  ==========================================================================
``options``        :class:`RunOptions` and every default of ``run``, ``status`` and ``ui``
``space/``         search spaces: schema, dotted fields, list encoding, the runtime space, validation
``objectives``     what a study optimises (objective names) and the caps it respects
``seeds``          trial and sampler seeds from the study seed
``urls``           storage and tracking URLs (defaults, SQLite paths, display)
``storage``        Optuna storages, finding and opening studies
``samplers``       Optuna's samplers and pruners by name
``trial``          one trial: :class:`Objective`, :class:`TrialCallback`, which failures are the trial's
``resources``      peak memory of a trial
``queries``        completed / feasible / best trials, leaderboard rows, Pareto front, picks
``pareto``         the pure front, knee and pick functions
``reports``        what ``dhns-search status`` shows
``export``         standalone configs of the best trials
``publish``        what the study's MLflow parent run receives
``plots``          study plots as PNG files
``runner``         ``run_study``: prepare, attach, optimise, finish
=================  ==========================================================================

Public entry points::

    from dhns_search.search import load_space, suggest, apply, run_study, RunOptions

The modules that import optuna or torch load on first use, so ``import dhns_search.search``
stays quick for the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

from dhns_search.search.options import RunOptions
from dhns_search.search.space import SearchSpace, apply, load_space, suggest

__all__ = [
    "RunOptions",
    "SearchSpace",
    "StudySummary",
    "apply",
    "export_best",
    "list_studies",
    "load_space",
    "open_study",
    "run_study",
    "study_report",
    "suggest",
]

_LAZY = {
    "StudySummary": "dhns_search.search.runner",
    "run_study": "dhns_search.search.runner",
    "open_study": "dhns_search.search.storage",
    "list_studies": "dhns_search.search.reports",
    "study_report": "dhns_search.search.reports",
    "export_best": "dhns_search.search.export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dhns_search.search' has no attribute {name!r}")
