"""Arms taken from a study: the best completed trial's configuration, as ``dhns-search export`` writes it.

This is the only module of :mod:`dhns_search.ablation` that needs optuna; it is imported when an ablation
names a ``study:`` base.
"""

from __future__ import annotations

from dhns_search.config.models import RunConfig

__all__ = ["best_trial_config"]


def best_trial_config(name: str, storage: str | None, where: dict | None = None) -> RunConfig:
    """The replayable configuration of the best feasible completed trial of study ``name`` (among those whose
    parameters have the values of ``where``, when given)."""
    from dhns_search.search.export import trial_config
    from dhns_search.search.queries import pick_trial
    from dhns_search.search.storage import open_study

    study, _ = open_study(name, storage)
    return trial_config(study, pick_trial(study, "best", where), pick="best")
