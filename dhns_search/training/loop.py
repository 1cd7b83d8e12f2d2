"""The training loop: base KGC training plus DHNS, validation, early stopping, checkpoints, resume.

:func:`train` is the one entry point.  It never imports optuna or mlflow: the search layer observes it
through :class:`Callback` objects and stops it by raising :class:`StopTraining` from one.  A run is made
of loss terms (:mod:`dhns_search.training.terms`): the KGC term on base negatives, plus the DHNS term
when ``dhns.enabled``; the loop sums them and steps the KGC optimiser.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from dhns_search.config.io import config_differences, write_yaml
from dhns_search.config.models import STANDARD_MODALITIES, STRUCTURAL, RunConfig
from dhns_search.errors import ConfigError, TrainingError, warn
from dhns_search.files import atomic_write_text
from dhns_search.training.checkpoint import CHECKPOINT, TrainState, load_checkpoint, save_checkpoint, snapshot
from dhns_search.training.precision import resolve_precision
from dhns_search.training.terms import BatchPosition, LossTerm

__all__ = ["Callback", "StopTraining", "TrainResult", "TrainingInterrupted", "resolve_device", "train"]

#: what :func:`train` writes into a run folder besides :data:`~dhns_search.training.checkpoint.CHECKPOINT`:
#: the configuration that runs, the validation history (at every evaluation), the result (at the end)
CONFIG_FILE, METRICS_FILE, RESULT_FILE = "config.yaml", "metrics.json", "result.json"

#: per-batch statistics summed over an epoch (terms that are absent contribute 0)
EPOCH_STATS = ("train_loss", "kgc_loss", "ha_loss", "diffusion_loss")


class StopTraining(Exception):
    """Raised by a callback to end the run early (e.g. a pruned trial); :func:`train` re-raises it."""

    def __init__(self, reason: str = "stopped by a callback") -> None:
        super().__init__(reason)
        self.reason = reason


class TrainingInterrupted(Exception):
    """The ``stop`` event was set: the run stopped at a batch boundary, checkpointed when it has a folder."""

    def __init__(self, epoch: int, batch: int, checkpoint: Path | None) -> None:
        where = f"epoch {epoch}, batch {batch}"
        super().__init__(f"interrupted at {where}" + (f"; checkpoint {checkpoint}" if checkpoint else ""))
        self.epoch, self.batch, self.checkpoint = epoch, batch, checkpoint


class Callback(Protocol):
    def on_evaluation(self, epoch: int, metrics: dict[str, float], history: list[dict]) -> None: ...

    def on_epoch_end(self, epoch: int, stats: dict[str, float]) -> None: ...


@dataclass
class TrainResult:
    config: RunConfig
    best_epoch: int
    best_valid: dict[str, float]
    test: dict[str, float] | None
    history: list[dict]
    epochs_run: int
    seconds: float
    run_dir: Path | None = None
    dataset_fingerprint: str | None = None
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best_value(self) -> float:
        return float(self.best_valid.get(self.config.train.metric, float("nan")))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} requested but torch.cuda.is_available() is False")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name!r} requested but this machine has {torch.cuda.device_count()} GPU(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


def train(
    cfg: RunConfig,
    *,
    dataset=None,
    callbacks: Sequence[Callback] = (),
    run_dir: str | Path | None = None,
    resume: bool = False,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train one model as ``cfg`` says and return its best validation and final test metrics.

    Phases per batch (method section 4): KGC loss on base negatives; generator update(s); generation of
    the hardness levels without gradients; NTAT loss; one step of the KGC optimiser.  Every
    ``train.eval_every`` epochs the validation split is ranked; the best state (by ``train.metric``) is
    kept and restored before the test evaluation.  The test split is never used for model selection.

    With ``run_dir`` the folder receives ``config.yaml``, ``metrics.json``, ``result.json`` and, at every
    evaluation, the full training state in ``checkpoint.pt`` (:mod:`~dhns_search.training.checkpoint`).
    ``resume=True`` continues from that checkpoint (the configuration must be the one that ran).  When
    ``stop`` is set, the run checkpoints at the next batch boundary and raises :class:`TrainingInterrupted`.

    On CPU the run is repeatable bit for bit, resumed or not: besides the seeded generators, PyTorch's
    deterministic algorithms are switched on for the duration of the call (multi-threaded index-add
    kernels in the embedding backward otherwise differ in the last bits from run to run) and restored.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    if resolve_device(cfg.device).type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(cfg, dataset, callbacks, run_dir, resume, stop)
    finally:
        torch.use_deterministic_algorithms(previous)


@dataclass
class _Run:
    """What one run is made of, built once by :func:`_setup`."""

    cfg: RunConfig  #: resolved: device and semantic levels say what runs
    device: torch.device
    dataset: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  #: the learning-rate schedule of ``train.lr_schedule`` (None = constant)
    terms: dict[str, LossTerm]
    evaluator: Any
    index_rng: torch.Generator  #: shuffling and base negatives (CPU)
    train_triples: torch.Tensor
    valid_triples: torch.Tensor
    path: Path | None
    best: list[dict | None] = field(default_factory=lambda: [None, None])  #: best model and generator states

    @property
    def batch_size(self) -> int:
        return min(self.cfg.train.batch_size, self.train_triples.shape[0])

    @property
    def n_batches(self) -> int:
        return math.ceil(self.train_triples.shape[0] / self.batch_size)

    @property
    def generator(self) -> torch.nn.Module | None:
        dhns = self.terms.get("dhns")
        return None if dhns is None else dhns.dhns.generator


def _train(cfg, dataset, callbacks, run_dir, resume, stop) -> TrainResult:
    t_start = time.perf_counter()
    run = _setup(cfg, dataset, run_dir)
    state = _restore(run) if resume else TrainState()
    if run.path is not None and not resume:
        write_yaml(run.cfg, run.path / CONFIG_FILE)

    with _progress(run.cfg.train.progress) as bar:
        task = bar.add_task("train", total=run.cfg.train.epochs * run.n_batches,
                            completed=state.epoch * run.n_batches + state.batch, epoch=state.epoch + 1,
                            loss="-", val="-")
        while state.epoch < run.cfg.train.epochs and not state.stopped_early:
            # ---- one epoch of training steps (resumes mid-epoch after an interrupt)
            stats = _train_epoch(run, state, bar, task, stop)
            if run.cfg.train.lr_schedule == "cosine":
                run.scheduler.step()
            for cb in callbacks:
                hook = getattr(cb, "on_epoch_end", None)
                if hook is not None:
                    hook(state.epoch, stats)
            # ---- evaluate, keep the best, checkpoint, let callbacks prune, stop early
            if state.epoch % run.cfg.train.eval_every == 0 or state.epoch == run.cfg.train.epochs:
                value = _evaluate(run, state, stats, callbacks)
                bar.update(task, val=f"{value:.4f}")

    # ---- restore the best state and test it
    if run.best[0] is not None:
        run.model.load_state_dict(run.best[0])
    test = None
    if run.cfg.train.test:
        run.model.eval()
        test = run.evaluator.evaluate(run.model, run.dataset.test.to(run.device))
    result = TrainResult(
        config=run.cfg, best_epoch=state.best_epoch, best_valid=state.best_valid, test=test,
        history=state.history, epochs_run=state.epoch, seconds=time.perf_counter() - t_start,
        run_dir=run.path, dataset_fingerprint=run.dataset.fingerprint(), stopped_early=state.stopped_early,
    )
    if run.path is not None:
        atomic_write_text(run.path / RESULT_FILE, json.dumps(result_summary(result), indent=1))
    return result


def _setup(cfg: RunConfig, dataset, run_dir: str | Path | None) -> _Run:
    """Data, model, loss terms and optimiser of ``cfg``; one seed drives every random choice."""
    # Imports here keep ``import dhns_search.training`` light for the CLI.
    from dhns_search.data import check_splits, load_from_config
    from dhns_search.evaluation import FilteredEvaluator
    from dhns_search.models import KGEModel
    from dhns_search.training.dhns import DHNSTerm
    from dhns_search.training.kgc import KGCTerm

    device = resolve_device(cfg.device)
    cfg = cfg.model_copy(update={"device": device.type}, deep=True)  # the saved config says what ran
    precision, why = resolve_precision(cfg.dhns.precision, device)
    if why is not None:
        warn(why)
        cfg.dhns.precision = precision
    torch.manual_seed(cfg.seed)
    if dataset is None:
        dataset = load_from_config(cfg.data)
        for message in dataset.warnings:
            warn(message)
    check_splits(dataset)
    model = KGEModel(dataset.num_entities, dataset.num_relations, cfg.model, dataset.features).to(device)
    index_rng = torch.Generator().manual_seed(cfg.seed)
    terms: dict[str, LossTerm] = {"kgc": KGCTerm(cfg, dataset, index_rng)}
    if cfg.dhns.enabled:
        cfg = _resolve_modalities(cfg, list(model.entities.modalities))
        terms["dhns"] = DHNSTerm(model, cfg, device)
    optimizer = torch.optim.Adam(_param_groups(model, cfg.train), lr=cfg.train.lr)
    return _Run(
        cfg=cfg, device=device, dataset=dataset, model=model, optimizer=optimizer,
        scheduler=make_lr_scheduler(optimizer, cfg.train), terms=terms,
        evaluator=FilteredEvaluator([dataset.train, dataset.valid, dataset.test], dataset.num_entities,
                                    batch_size=cfg.train.eval_batch_size),
        index_rng=index_rng, train_triples=dataset.train.to(device), valid_triples=dataset.valid.to(device),
        path=None if run_dir is None else Path(run_dir),
    )


def _train_epoch(run: _Run, state: TrainState, bar, task, stop: threading.Event | None) -> dict[str, float]:
    """Run the batches of epoch ``state.epoch + 1`` from ``state.batch`` on; return the epoch's statistics."""
    if state.perm is None:  # a new epoch (an interrupted one carries its order)
        state.perm = torch.randperm(run.train_triples.shape[0], generator=run.index_rng).to(run.device)
        state.sums, state.epoch_elapsed = dict.fromkeys(EPOCH_STATS, 0.0), 0.0
    run.model.train()
    t_start, size = time.perf_counter(), run.batch_size
    while state.batch < run.n_batches:
        if stop is not None and stop.is_set():
            state.epoch_elapsed += time.perf_counter() - t_start
            raise _interrupted(run, state)
        at = BatchPosition(state.epoch + 1, state.batch, state.global_batch)
        batch = run.train_triples[state.perm[state.batch * size : (state.batch + 1) * size]]
        loss = _step(run, batch, at, state.sums)
        state.batch, state.global_batch = state.batch + 1, state.global_batch + 1
        bar.update(task, advance=1, epoch=at.epoch, loss=f"{loss:.4f}")
    stats = {k: v / run.n_batches for k, v in state.sums.items()}
    stats["epoch_seconds"] = state.epoch_elapsed + time.perf_counter() - t_start
    stats["lr"] = run.optimizer.param_groups[0]["lr"]
    state.epoch, state.batch, state.perm = state.epoch + 1, 0, None
    return stats


def _step(run: _Run, batch: torch.Tensor, at: BatchPosition, sums: dict[str, float]) -> float:
    """One training step: every term's loss on ``batch``, one backward pass, one KGC optimiser step."""
    run.optimizer.zero_grad(set_to_none=True)  # before the terms: DHNS may leave diffusion gradients
    loss = None
    for term in run.terms.values():
        part, stats = term(run.model, batch, at)
        loss = part if loss is None else loss + part
        for key, value in stats.items():
            sums[key] += value
    loss.backward()
    run.optimizer.step()
    value = loss.item()
    sums["train_loss"] += value
    return value


def _evaluate(run: _Run, state: TrainState, stats: dict[str, float], callbacks: Sequence[Callback]) -> float:
    """Rank the validation split, record it, keep the best state, checkpoint; callbacks may stop the run."""
    run.model.eval()
    t_eval = time.perf_counter()
    valid = run.evaluator.evaluate(run.model, run.valid_triples)
    record = {"epoch": state.epoch, **stats, "eval_seconds": time.perf_counter() - t_eval, "valid": valid}
    if run.cfg.train.test_curve:  # reported only: selection below reads the validation metric
        record["test"] = run.evaluator.evaluate(run.model, run.dataset.test.to(run.device))
    state.history.append(record)
    value = valid[run.cfg.train.metric]
    if run.cfg.train.lr_schedule == "plateau":
        run.scheduler.step(value)
    if state.improve(value, state.epoch, valid):
        run.best = snapshot(run.model, run.generator)
    if run.cfg.train.patience and state.bad_evals >= run.cfg.train.patience:
        state.stopped_early = True
    if run.path is not None:
        _checkpoint(run, state)
        atomic_write_text(run.path / METRICS_FILE, json.dumps(state.history, indent=1))
    for cb in callbacks:  # may raise StopTraining (pruning)
        hook = getattr(cb, "on_evaluation", None)
        if hook is not None:
            hook(state.epoch, valid, state.history)
    return value


# ---------------------------------------------------------------------------------- checkpoints
def _checkpoint(run: _Run, state: TrainState) -> Path:
    path = run.path / CHECKPOINT
    rng = {"torch": torch.get_rng_state(), "index": run.index_rng.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_checkpoint(path, {
        "config": run.cfg.model_dump(mode="json"), "state": state.to_dict(),
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
        "terms": {name: term.state_dict() for name, term in run.terms.items()},
        "rng": rng, "best": {"epoch": state.best_epoch, "model": run.best[0], "generator": run.best[1]},
    })
    return path


def _interrupted(run: _Run, state: TrainState) -> TrainingInterrupted:
    path = _checkpoint(run, state) if run.path is not None else None
    return TrainingInterrupted(state.epoch + 1, state.batch, path)


def _restore(run: _Run) -> TrainState:
    """Load ``run.path``'s checkpoint into ``run``; return the loop state to continue from."""
    if run.path is None:
        raise ConfigError("resuming needs the run folder of the run to continue")
    data = load_checkpoint(run.path / CHECKPOINT)
    saved = RunConfig.model_validate(data["config"])
    what_trains = {"train": {"progress"}, "provenance": True}  # display and where the config came from do not
    if saved.model_dump(exclude=what_trains) != run.cfg.model_dump(exclude=what_trains):
        diff = config_differences(saved.model_dump(), run.cfg.model_dump())
        raise TrainingError(f"{run.path}: the checkpoint was written by another configuration ({diff})")
    run.model.load_state_dict(data["model"])
    run.optimizer.load_state_dict(data["optimizer"])
    if run.scheduler is not None and data.get("scheduler") is not None:
        run.scheduler.load_state_dict(data["scheduler"])
    for name, term in run.terms.items():
        term.load_state_dict(data["terms"][name])
    torch.set_rng_state(data["rng"]["torch"])
    run.index_rng.set_state(data["rng"]["index"])
    if "cuda" in data["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(data["rng"]["cuda"])
    run.best = [data["best"]["model"], data["best"]["generator"]]
    state = TrainState.from_dict(data["state"])
    if state.perm is not None:
        state.perm = state.perm.to(run.device)
    return state


# ---------------------------------------------------------------------------------- helpers
def _param_groups(model: torch.nn.Module, cfg) -> list[dict]:
    """The KGC optimiser's parameter groups: the feature side at ``lr * feature_lr_factor``, the rest at ``lr``.

    The feature side is every parameter of ``model.entities`` but the structural table (projections,
    missing vectors, the fusion's attention vector, fine-tuned feature rows).  With factor 1 there is one
    group, as before the option existed (the optimiser state of older checkpoints then still loads).
    """
    if cfg.feature_lr_factor == 1.0:
        return [{"params": list(model.parameters())}]
    feature_ids = {id(p) for name, p in model.entities.named_parameters() if name != "structural"}
    feature = [p for p in model.parameters() if id(p) in feature_ids]
    rest = [p for p in model.parameters() if id(p) not in feature_ids]
    return [{"params": rest}, {"params": feature, "lr": cfg.lr * cfg.feature_lr_factor}]


def make_lr_scheduler(optimizer: torch.optim.Optimizer, cfg) -> Any:
    """The schedule of ``cfg.lr_schedule`` (a :class:`~dhns_search.config.models.TrainConfig`) on ``optimizer``.

    ``constant``: None.  ``cosine``: annealed once per epoch, from ``lr`` (epoch 1) to ``lr * lr_min_factor``
    (reached after the last epoch, or after ``lr_horizon`` epochs when that is set, then held).  ``plateau``: ``ReduceLROnPlateau`` on the validation metric (maximised),
    stepped at every evaluation: after ``lr_patience`` evaluations without improvement the lr is multiplied
    by ``lr_decay``.  Only the KGC optimiser is scheduled; the generator keeps ``dhns.generator_lr``.
    """
    if cfg.lr_schedule == "constant":
        return None
    if cfg.lr_schedule == "cosine":
        low, epochs = cfg.lr_min_factor, cfg.lr_horizon or cfg.epochs  # every group annealed to the same fraction of its own lr
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: low + (1.0 - low) * (1.0 + math.cos(math.pi * min(e, epochs) / epochs)) / 2.0)
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_decay,
                                                          patience=cfg.lr_patience, threshold=0.0)
    raise ConfigError(f"train.lr_schedule: unknown schedule {cfg.lr_schedule!r}")


def _progress(enabled: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _resolve_modalities(cfg: RunConfig, available: list[str]) -> RunConfig:
    """Keep the semantic levels whose tables exist (a standard one the dataset lacks, say ``textual``, is
    left out as documented); the saved config then says what really ran.  A name that is neither a
    standard modality nor a table of the dataset is a mistake, not an absent table: refused."""
    unknown = [m for m in cfg.dhns.modalities if m not in available and m not in (STRUCTURAL, *STANDARD_MODALITIES)]
    if unknown:
        raise ConfigError(f"dhns.modalities: {', '.join(map(repr, unknown))} is neither a standard modality "
                          f"({', '.join((STRUCTURAL, *STANDARD_MODALITIES))}) nor a feature table of this dataset "
                          f"(it has {', '.join(available)})")
    used = [m for m in cfg.dhns.modalities if m in available]
    if not used:
        raise ConfigError(
            f"dhns.modalities {cfg.dhns.modalities}: none of them is available (this dataset has {available}); "
            "add feature tables (data.features, data.placeholder_features) or include 'structural'"
        )
    if used != cfg.dhns.modalities:
        cfg = cfg.model_copy(deep=True)
        cfg.dhns.modalities = used
    return cfg


def result_summary(result: TrainResult) -> dict:
    return {
        "best_epoch": result.best_epoch,
        "metric": result.config.train.metric,
        "best_value": result.best_value,
        "valid": result.best_valid,
        "test": result.test,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "seed": result.config.seed,
        "device": result.config.device,
        "stopped_early": result.stopped_early,
        "dataset_fingerprint": result.dataset_fingerprint,
    }
