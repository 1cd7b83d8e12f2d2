"""A deterministic stand-in for :func:`dhns_search.training.train`, shared by the search tests.

It speaks the trainer's callback protocol (``on_epoch_end`` with the epoch statistics, then
``on_evaluation`` with the validation metrics, every epoch) and returns a real ``TrainResult``, so the
search layer cannot tell it from the trainer; each test file chooses the learning curve.
"""

from __future__ import annotations

from collections.abc import Callable

from dhns_search.training.loop import TrainResult


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
