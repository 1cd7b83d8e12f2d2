"""Everything a run needs to continue: the loop's position and records, and the checkpoint file format.

A checkpoint (``run_dir/checkpoint.pt``, written atomically at every evaluation and when a run is
interrupted) holds:

- ``format``: :data:`FORMAT`; ``config``: the resolved configuration that ran;
- ``state``: the loop's :class:`TrainState` (epoch and batch counters, the current epoch's order and
  partial sums when written mid-epoch, the history, the best value, epoch and metrics, the patience count);
- ``model`` and ``optimizer``: the KGC model and its Adam state;
- ``terms``: each loss term's own state (DHNS: generator, its optimiser, its noise generator, the cached
  generated negatives);
- ``rng``: every random generator's state (the global CPU generator, CUDA's when present, the trainer's
  index generator);
- ``best``: the best model (and generator) so far, restored before the test evaluation.

On CPU a run resumed from it ends bit for bit where the uninterrupted run ends.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dhns_search.errors import TrainingError
from dhns_search.files import atomic_write

__all__ = ["CHECKPOINT", "FORMAT", "TrainState", "load_checkpoint", "save_checkpoint"]

#: version of the checkpoint layout; 1 was the best model only (no optimiser or random states)
FORMAT = 2
#: file name inside a run folder
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainState:
    """Where the loop is and what it has seen (all of it goes into the checkpoint)."""

    epoch: int = 0  #: epochs completed
    batch: int = 0  #: batches completed in epoch ``epoch + 1`` (0 at an epoch boundary)
    global_batch: int = 0  #: batches completed in the whole run
    perm: torch.Tensor | None = None  #: the order of the epoch in progress (None until it starts)
    sums: dict[str, float] = field(default_factory=dict)  #: per-batch statistics summed over the epoch so far
    epoch_elapsed: float = 0.0  #: training seconds of the epoch in progress before this process took over
    history: list[dict] = field(default_factory=list)  #: one record per evaluation
    best_value: float = -math.inf
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0  #: evaluations without improvement (patience)
    stopped_early: bool = False

    def improve(self, value: float, epoch: int, valid: dict[str, float]) -> bool:
        """Record an evaluation; True when it is the best so far (then the patience count resets)."""
        if value > self.best_value:
            self.best_value, self.best_epoch, self.best_valid, self.bad_evals = value, epoch, valid, 0
            return True
        self.bad_evals += 1
        return False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["perm"] = None if self.perm is None else self.perm.cpu()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**data)


def snapshot(*modules: torch.nn.Module | None) -> list[dict | None]:
    """Deep copies of the state dicts of ``modules`` (None stays None)."""
    return [None if m is None else copy.deepcopy(m.state_dict()) for m in modules]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (see the module docstring) atomically, stamped with :data:`FORMAT`."""
    payload = {"format": FORMAT, **payload}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, or raise :class:`TrainingError` saying why not."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from (runs write one at every evaluation)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file raises any unpickling error
        raise TrainingError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format", 1) if isinstance(data, dict) else "unknown"
        raise TrainingError(
            f"{path}: checkpoint format {found}, this version resumes format {FORMAT} only "
            "(format 1 held the best model without optimiser or random states)"
        )
    return data
