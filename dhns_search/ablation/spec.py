"""The ablation file: named arms (overrides on one base configuration), seeds and a reference arm.

::

    description: What DHNS does on MKG-Y
    base: preset:paper-distmult-mkgy      # preset:NAME, a config or export file, or study:NAME
    set:                                  # dotted overrides for every arm
      model.dim: 256
      train.epochs: 40
    seeds: 3                              # or a list: [0, 1, 2]; every arm runs the same seeds
    reference: uniform                    # paired differences are taken against this arm
    metrics: [mrr_realistic_filtered, hits_at_10_realistic_filtered]
    arms:
      uniform: {set: {dhns.enabled: false}}
      dhns: {set: {dhns.kgc_diffusion_weight: 1.0}}
      released: {base: preset:released-distmult-mkgy, set: {...}}
      tuned: {base: "study:dhns-cpu", storage: sqlite:///studies/studies.db}

An arm's configuration is its base (the file's when it has none), then the file's ``set``, then the
arm's ``set``, then the command line's ``--set``; ``seed`` comes from ``seeds``.  ``study:NAME`` is the
best completed trial of that study (``storage`` says where it lives), exported as ``dhns-search export``
would, so a tuned arm retrains the configuration the search found.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from dhns_search.config.io import (
    apply_overrides,
    deep_merge,
    read_preset,
    read_yaml_mapping,
    set_dotted,
    validate_config,
    validate_model,
)
from dhns_search.config.models import RunConfig, StrictModel
from dhns_search.errors import ConfigError

__all__ = ["AblationSpec", "ArmSpec", "arm_config", "load_ablation"]

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_METRICS = ["mrr_realistic_filtered", "hits_at_10_realistic_filtered"]


class ArmSpec(StrictModel):
    base: str | None = Field(None, description="preset:NAME, a config/export file, or study:NAME; null = the file's")
    storage: str | None = Field(None, description="storage URL of a study: base")
    where: dict[str, Any] = Field(
        default_factory=dict, description="study: base: the best trial among those with these parameter values, "
        "e.g. {dhns.enabled: false}")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of this arm")
    description: str | None = None


class AblationSpec(StrictModel):
    description: str | None = None
    base: str = Field("preset:dhns-distmult", description="base configuration of every arm without its own")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides for every arm")
    seeds: int | list[int] = Field(3, description="number of seeds (0, 1, ...) or the seeds themselves")
    reference: str = Field(description="the arm every other arm is compared with")
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    arms: dict[str, ArmSpec]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError("seeds must be at least 1")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("seeds must be a non-empty list without repeats")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        """Every name must be a metric the evaluator reports (a misspelt one was found only after training)."""
        known = evaluation_metric_names()
        bad = [m for m in v if m not in known]
        if bad:
            close = {m: difflib.get_close_matches(m, sorted(known), n=1) for m in bad}
            hints = "; ".join(f"{m!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for m, c in close.items())
            raise ValueError(f"not evaluation metrics: {hints}; they are <metric>_<policy>_filtered, e.g. "
                             "mrr_realistic_filtered, hits_at_10_optimistic_filtered, with head_ or tail_ for one side")
        if not v:
            raise ValueError("metrics: give at least one")
        return v

    @model_validator(mode="after")
    def _arms(self) -> AblationSpec:
        if len(self.arms) < 2:
            raise ValueError("a comparison needs at least two arms")
        bad = [a for a in self.arms if not ARM_NAME.match(a)]
        if bad:
            raise ValueError(f"arm names must be letters, digits, '_', '-' or '.', got {bad}")
        if self.reference not in self.arms:
            raise ValueError(f"reference {self.reference!r} is not one of the arms {list(self.arms)}")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def load_ablation(path: str | Path) -> AblationSpec:
    """Read and validate an ablation file (errors name the file and the key path)."""
    return validate_model(AblationSpec, read_yaml_mapping(path, "a mapping (description, base, arms ...)"), str(path))


def _base_data(base: str, storage: str | None, origin: Path | None, where: dict | None = None) -> dict:
    if base.startswith("preset:"):
        return read_preset(base.removeprefix("preset:"))
    if base.startswith("study:"):
        from dhns_search.ablation.studies import best_trial_config  # optuna only when a study is named

        return best_trial_config(base.removeprefix("study:"), storage, where).model_dump(mode="json")
    path = Path(base)
    if not path.is_absolute() and origin is not None and not path.exists():
        path = origin / path
    return read_yaml_mapping(path, "a mapping of configuration settings")


def arm_config(spec: AblationSpec, arm: str, overrides: list[str] | None = None, *,
               origin: Path | None = None) -> RunConfig:
    """The configuration of ``arm`` (module docstring); ``origin`` resolves relative base paths."""
    a = spec.arms[arm]
    if a.where and not (a.base or spec.base).startswith("study:"):
        raise ConfigError(f"arms.{arm}.where filters the trials of a study: its base must be study:NAME")
    data = _base_data(a.base or spec.base, a.storage, origin, a.where)
    for source in (spec.set, a.set):
        for key, value in source.items():
            set_dotted(data, key.split("."), value, source=f"arm {arm!r}: set {key}")
    data = apply_overrides(deep_merge({}, data), overrides)
    return validate_config(data, f"arm {arm!r} of the ablation")


def evaluation_metric_names() -> set[str]:
    """The metric names of :class:`~dhns_search.evaluation.FilteredEvaluator`'s results (both sides and each side)."""
    from dhns_search.evaluation.ranking import METRICS, POLICIES

    names = {f"{m}_{p}_filtered" for m in METRICS for p in POLICIES}
    return names | {f"{side}_{n}" for side in ("head", "tail") for n in names}
