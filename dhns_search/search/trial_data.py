"""A trial's bulky records (its resolved configuration, the decoded parameters, every validation metric of
its best epoch), kept in the study's storage out of the user attributes.

optuna-dashboard shows every user attribute as one line of JSON, so a full configuration there made the
trial page thousands of pixels wide.  These records are *system* attributes (``dhns:config``,
``dhns:params``, ``dhns:best_valid``): same storage, same transactions, read back exactly by
``dhns-search export``; the dashboard lists only the small user attributes (seed, best epoch, times,
memory, the MLflow run id ...).  Trials recorded before this moved read from their user attributes.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

__all__ = ["RECORDS", "read", "store"]

#: what a trial records this way
RECORDS = ("config", "params", "best_valid")
_PREFIX = "dhns:"


def store(trial: optuna.Trial, name: str, value: Any) -> None:
    """Record ``value`` (JSON-serialisable) as the trial's ``name`` (one of :data:`RECORDS`)."""
    if name not in RECORDS:
        raise ValueError(f"unknown trial record {name!r} (known: {', '.join(RECORDS)})")
    # Optuna 5 has no public setter for a trial's system attributes; its own set_constraint writes
    # them through the storage with the trial's id, as here.
    trial.storage.set_trial_system_attr(trial._trial_id, _PREFIX + name, value)


def read(trial: FrozenTrial, name: str, default: Any = None) -> Any:
    """The trial's record ``name``: the system attribute, else (older studies) the user attribute."""
    if name not in RECORDS:
        raise ValueError(f"unknown trial record {name!r} (known: {', '.join(RECORDS)})")
    value = trial.system_attrs.get(_PREFIX + name)
    return value if value is not None else trial.user_attrs.get(name, default)
