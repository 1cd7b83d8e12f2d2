"""The protocol every term of a training step's loss follows, and what terms share.

Called on a batch, a term returns its share of the KGC model's loss and the statistics it wants logged,
and it hands its state to the checkpoint (``state_dict`` / ``load_state_dict``), so a resumed run continues
exactly.  The trainer sums the terms, steps the KGC optimiser once, and never needs to know what a term
does.  Terms: :class:`~dhns_search.training.kgc.KGCTerm` (base negatives) and
:class:`~dhns_search.training.dhns.DHNSTerm` (generated negatives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from dhns_search.errors import TrainingError

__all__ = ["BatchPosition", "LossTerm", "check_finite"]


@dataclass(frozen=True)
class BatchPosition:
    """Where a batch sits in the run: ``epoch`` (1-based), ``batch`` within it, ``global_batch`` overall."""

    epoch: int
    batch: int
    global_batch: int


class LossTerm(Protocol):
    def __call__(self, model: nn.Module, batch: torch.Tensor, at: BatchPosition) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: [B, 3] positive (h, r, t) ids -> (scalar loss for the KGC optimiser, statistics)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def check_finite(value: torch.Tensor, what: str, at: BatchPosition) -> None:
    """Raise :class:`TrainingError` naming the loss and the batch when ``value`` is NaN or infinite."""
    if not torch.isfinite(value).all():
        raise TrainingError(
            f"{what} is {value.item()} at epoch {at.epoch}, batch {at.batch}; lower the learning rate, "
            "the regularisation or dhns.weight (nothing was saved from the diverged state)"
        )
