"""The search layer: Optuna studies of the trainer.  It composes the core (:mod:`dhns_search.training` ...)
with Optuna and logs to MLflow through :mod:`dhns_search.tracking` (it imports no mlflow itself).

Who imports optuna: the core (``config``, ``data``, ``models``, ``diffusion``, ``training``, ``evaluation``)
and ``tracking`` never; this package does (never in the light modules of the first group); above it,
:mod:`dhns_search.cli.live` does too (the live table of ``run`` is an Optuna callback that reads
``FrozenTrial`` objects), and :mod:`dhns_search.ablation` reaches Optuna only through this package's
modules.  ``tests/test_layering.py`` checks this rule and that every module is listed here.

One job per module, in four groups.

What a search is (light: no optuna, no torch; the command line reads its defaults here):

``options``               :class:`RunOptions` and every default of ``run``, ``status`` and ``ui``
``urls``                  storage and tracking URLs (defaults, SQLite paths, passwords hidden for display)
``seeds``                 trial and sampler seeds: one stable hash of the study seed
``objectives``            what a study optimises (``--objective`` names) and the caps it respects (``--max-*``)
``space/``                search spaces (:func:`load_space`, :func:`suggest`, :func:`apply`):
``space/schema``          the YAML schema of a space file, reserved paths, schema messages
``space/fields``          dotted paths into :class:`RunConfig`: which leaf, its type, does a value fit
``space/encoding``        list choices as ``"0,0.1,0.5"``, configs flattened for MLflow, values as text
``space/runtime``         the validated space (:class:`SearchSpace`): suggest, resolve, apply
``space/validation``      reading a space file and running every check

Studies and where they live:

``storage``               Optuna storages for any URL; finding and opening studies by name
``locks``                 file locks next to a store; the budget lock of a study
``study_setup``           creating a study, or continuing it unchanged; what ``worker`` reads from a study
``samplers``              Optuna's samplers and pruners by name, and which fit a study

Running trials:

``runner``                ``run_study``: prepare, attach, optimise, finish
``workers``               ``run --workers / --devices``: worker processes, device slots, signals passed on
``trial_loop``            one worker's trials, started under the budget lock until the budget or a stop
``trial``                 one trial: :class:`Objective`, :class:`TrialCallback`, which failures are the trial's
``trial_folder``          a trial's run folder in the work directory; the folder a retry continues
``trial_data``            a trial's config, decoded params and best validation metrics (system attributes)
``recovery``              a trial's worker, dead workers swept, retries from the checkpoint, the budget count
``resources``             peak memory of a trial

Results:

``queries``               completed / feasible / best trials, leaderboard rows, Pareto front, picks
``pareto``                the pure front, knee and pick functions
``reports``               what ``dhns-search status`` shows
``export``                standalone configs that replay the best trials, and the files they go to
``publish``               what the study's MLflow parent run receives
``plots``                 study plots as PNG files and interactive HTML pages

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
