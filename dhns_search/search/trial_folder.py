"""A trial's run folder in the study's work directory, where the trainer checkpoints its full state at
every evaluation, and how a retried trial finds the folder of the trial it continues.

``<work dir>/<study>-<uid>/trial-NNNN/`` holds ``config.yaml``, ``metrics.json``, ``result.json`` and
``checkpoint.pt`` (:mod:`dhns_search.training.checkpoint`).  The folder is recorded on the trial (system
attribute ``dhns.run_dir``) with its worker (``dhns.worker``); a retry (:mod:`.recovery`) inherits both
and continues training in the same folder from the checkpoint, with the dead trial's seed.  A finished
trial keeps its folder but not its checkpoint (the bulk of it); an interrupted one keeps everything.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from dhns_search.errors import ConfigError, DhnsError
from dhns_search.search.recovery import RUN_DIR_ATTR, WORKER_ATTR, this_worker
from dhns_search.training.checkpoint import CHECKPOINT

__all__ = ["INTERRUPTED", "TrialFolder", "check_work_dir", "study_work_dir"]

#: the fail reason of a trial stopped by Ctrl-C or SIGTERM (it is retried from its checkpoint)
INTERRUPTED = "interrupted"


def check_work_dir(root: Path, option: str = "--work-dir") -> None:
    """Refuse a work directory that cannot hold trial folders, before any study exists: a file, a path
    through a file, a name too long for the filesystem, a folder (or the nearest existing parent) that
    cannot be written."""
    too_long = [part for part in root.parts if len(os.fsencode(part)) > 255]
    if too_long:
        raise ConfigError(f"{option}: the folder name {too_long[0][:40]}... is longer than 255 bytes")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{option} {root}: a file, not a folder")
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    existing = existing if existing.exists() else Path.cwd()
    if not existing.is_dir():
        raise ConfigError(f"{option} {root}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {root}: {existing} cannot be written (permission denied or a read-only "
                          "filesystem)")


def study_work_dir(root: Path, study: str, uid: str) -> Path:
    """The work directory of one study (its uid tells it from an older study of the same name)."""
    return root / f"{study}-{uid[:8]}"


@dataclass
class TrialFolder:
    """Where one trial trains, and whether it continues a dead or interrupted trial."""

    path: Path | None
    device: str
    seed: int | None = None  #: the seed of the trial this one continues
    retry_of: int | None = None  #: the number of the trial this one continues
    resume: bool = False  #: that trial left a checkpoint

    @classmethod
    def start(cls, trial: optuna.Trial, work_dir: Path | None, device: str | None) -> TrialFolder:
        """Record this worker, the device and the folder on ``trial``; a retry takes its dead trial's."""
        from dhns_search.training.loop import resolve_device

        frozen = trial.storage.get_trial(trial._trial_id)
        history = frozen.system_attrs.get("retry_history") or []
        previous = frozen.system_attrs.get(RUN_DIR_ATTR) if history else None
        if previous:
            path: Path | None = Path(previous)
        elif work_dir is not None:
            path = (work_dir / f"trial-{trial.number:04d}").resolve()
        else:
            path = None
        try:
            shown = str(resolve_device(device or "auto"))
        except DhnsError:  # the trainer reports it as the trial's failure
            shown = device or "auto"
        folder = cls(path=path, device=shown, seed=frozen.user_attrs.get("seed") if history else None,
                     retry_of=int(history[-1]) if history else None,
                     resume=path is not None and (path / CHECKPOINT).is_file())
        trial.storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, this_worker())
        if path is not None:
            trial.storage.set_trial_system_attr(trial._trial_id, RUN_DIR_ATTR, str(path))
        trial.set_user_attr("device", shown)
        if folder.retry_of is not None:
            trial.set_user_attr("retry_of", folder.retry_of)
        return folder

    def trainer_kwargs(self, trainer: Callable[..., Any], stop: Any) -> dict[str, Any]:
        """``run_dir``, ``resume`` and ``stop`` for the trainer, those it takes (a test double may not)."""
        params = inspect.signature(trainer).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        wanted = {"run_dir": self.path, "resume": self.resume or None, "stop": stop}
        return {k: v for k, v in wanted.items() if v is not None and (takes_all or k in params)}

    def finish(self, state: str) -> None:
        """A finished trial drops its checkpoint; an interrupted one keeps it for its retry."""
        if self.path is not None and state in ("COMPLETE", "PRUNED", "FAIL"):
            (self.path / CHECKPOINT).unlink(missing_ok=True)
