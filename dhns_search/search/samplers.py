"""Optuna's samplers and pruners by name (``run --sampler``, ``--pruner``), and which fit a study.

"Sampler" here is Optuna's: what proposes the next trial's parameters (not the negative sampler of the
trainer, nor the reverse diffusion chain).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna

from dhns_search.errors import ConfigError
from dhns_search.search.objectives import ObjectiveSpec, describe

__all__ = [
    "CONSTRAINED_SAMPLERS",
    "MULTI_OBJECTIVE_SAMPLERS",
    "PRUNERS",
    "SAMPLERS",
    "check_sampler",
    "make_pruner",
    "make_sampler",
    "resolve_pruner",
]

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc", "nsga2")
#: samplers that handle several objectives (CMA-ES raises for a multi-objective study)
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "gp", "random", "qmc")
#: samplers that steer away from infeasible trials (they read ``trial.constraints``); the others only
#: record feasibility
CONSTRAINED_SAMPLERS = ("tpe", "nsga2", "gp")
PRUNERS = ("median", "hyperband", "successive-halving", "percentile", "none")


def _unknown(kind: str, name: str, known: Sequence[str]) -> ConfigError:
    return ConfigError(f"unknown {kind} {name!r}; choose one of {', '.join(known)}")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler by name (see :data:`SAMPLERS`).

    ``gp`` (Gaussian process) needs scipy and torch, which are installed; ``cmaes`` needs the ``cmaes``
    package.  CMA-ES and QMC sample only numeric parameters jointly; categorical and conditional ones are
    drawn by the independent (random) sampler.  ``nsga2`` is Optuna's NSGA-II (population 50: the first
    50 trials are random), for multi-objective studies; TPE (the default) handles them too.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # multivariate + group: TPE models the parameters that occur together (conditional spaces)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ModuleNotFoundError:
                raise ConfigError("--sampler cmaes needs the 'cmaes' package: pip install cmaes") from None
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if name == "gp":
            try:
                import scipy  # noqa: F401
                import torch  # noqa: F401
            except ModuleNotFoundError as err:
                raise ConfigError(f"--sampler gp needs {err.name}: pip install {err.name}") from None
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False,
                                              warn_asynchronous_seeding=False)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
    raise _unknown("sampler", name, SAMPLERS)


def check_sampler(name: str, specs: Sequence[ObjectiveSpec]) -> None:
    """Refuse an unknown sampler, or one that cannot handle the study's number of objectives."""
    if name not in SAMPLERS:
        raise _unknown("sampler", name, SAMPLERS)
    if len(specs) > 1 and name not in MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"--sampler {name} optimises a single objective; for the objectives {describe(specs)} "
                          f"use {', '.join(MULTI_OBJECTIVE_SAMPLERS)} (tpe is the default)")


def resolve_pruner(requested: str | None, specs: Sequence[ObjectiveSpec]) -> str:
    """The pruner a study runs with: ``median`` by default, ``none`` for a multi-objective study
    (Optuna's ``trial.report`` / ``should_prune`` do not support several objectives)."""
    if requested is not None and requested not in PRUNERS:
        raise _unknown("pruner", requested, PRUNERS)
    if len(specs) > 1:
        if requested not in (None, "none"):
            raise ConfigError(f"--pruner {requested}: Optuna's pruners compare one value, and this study has "
                              f"{len(specs)} objectives ({describe(specs)}); every trial runs to the end. Leave "
                              "--pruner out (or use --pruner none)")
        return "none"
    return requested or "median"


#: completed trials before the median and percentile pruners prune (``run --pruner-startup``)
DEFAULT_PRUNER_STARTUP = 5


def make_pruner(name: str, startup: int | None = None) -> optuna.pruners.BasePruner:
    """A pruner by name (see :data:`PRUNERS`); steps are epochs.

    ``startup``: completed trials before the median or percentile pruner prunes (default
    :data:`DEFAULT_PRUNER_STARTUP`).  A study that starts from good enqueued trials (a campaign's warm starts)
    can prune from the first trial after them; with expensive trials, five unpruned random start-up trials may
    cost more than the rest of a sitting.
    """
    startup = DEFAULT_PRUNER_STARTUP if startup is None else startup
    if startup < 0:
        raise ConfigError(f"--pruner-startup must be >= 0 (got {startup})")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=startup)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise _unknown("pruner", name, PRUNERS)
