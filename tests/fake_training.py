"""Shared by the search tests: a deterministic stand-in for :func:`dhns_search.training.train`, and the
space files (with warm-start files) they run.

The fake trainer speaks the trainer's callback protocol (``on_epoch_end`` with the epoch statistics, then
``on_evaluation`` with the validation metrics, every epoch) and returns a real ``TrainResult``, so the
search layer cannot tell it from the trainer; each test file chooses the learning curve.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import yaml

from dhns_search.training.loop import TrainResult


def write_space(folder: Path, name: str, text: str, warm: list[dict], prefix: str) -> Path:
    """Write the space ``text`` as ``folder/name`` and each mapping of ``warm`` as ``<prefix><i>.yaml``
    (files for ``--enqueue``); returns the space file."""
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    for i, values in enumerate(warm):
        (folder / f"{prefix}{i}.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def fake_run(cfg, callbacks, *, value: Callable[[int], float], stats: Callable[[int], dict[str, float]],
             fingerprint: str) -> TrainResult:
    """Train "for" ``cfg.train.epochs`` epochs: ``value(epoch)`` is the validation ``train.metric``
    (hits@10 is twice it, capped at 1), ``stats(epoch)`` the epoch statistics besides ``train_loss``."""
    history, best = [], (0.0, 0, {})
    for epoch in range(1, cfg.train.epochs + 1):
        epoch_stats = {"train_loss": 1.0 / epoch, **stats(epoch)}
        for cb in callbacks:
            cb.on_epoch_end(epoch, epoch_stats)
        v = value(epoch)
        valid = {cfg.train.metric: v, "hits_at_10_realistic_filtered": min(1.0, 2 * v)}
        history.append({"epoch": epoch, **epoch_stats, "eval_seconds": 0.0, "valid": valid})
        if v > best[0]:
            best = (v, epoch, valid)
        for cb in callbacks:
            cb.on_evaluation(epoch, valid, history)
    return TrainResult(config=cfg, best_epoch=best[1], best_valid=best[2], test=None, history=history,
                       epochs_run=cfg.train.epochs, seconds=0.01, dataset_fingerprint=fingerprint)
