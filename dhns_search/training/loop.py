"""The training loop: base KGC training plus DHNS, validation, early stopping, checkpoints.

:func:`train` is the one entry point.  It never imports optuna or mlflow: the search layer observes it
through :class:`Callback` objects and stops it by raising :class:`StopTraining` from one.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from dhns_search.config.io import write_yaml
from dhns_search.config.models import RunConfig
from dhns_search.errors import ConfigError, TrainingError
from dhns_search.files import atomic_write


class StopTraining(Exception):
    """Raised by a callback to end the run early (e.g. a pruned trial); :func:`train` re-raises it."""

    def __init__(self, reason: str = "stopped by a callback") -> None:
        super().__init__(reason)
        self.reason = reason


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
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


def _check_finite(value: torch.Tensor, what: str, epoch: int, batch: int) -> None:
    if not torch.isfinite(value).all():
        raise TrainingError(
            f"{what} is {value.item()} at epoch {epoch}, batch {batch}; lower the learning rate, "
            "the regularisation or dhns.weight (nothing was saved from the diverged state)"
        )


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]epoch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  diff {task.fields[diff]:.4f}  val {task.fields[val]}"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def train(
    cfg: RunConfig,
    *,
    dataset=None,
    callbacks: Sequence[Callback] = (),
    run_dir: str | Path | None = None,
) -> TrainResult:
    """Train one model as ``cfg`` says and return its best validation and final test metrics.

    Phases per batch (method section 4): KGC loss on base negatives; generator update(s); generation of
    the hardness levels without gradients; NTAT loss; one step of the KGC optimiser.  Every
    ``train.eval_every`` epochs the validation split is ranked; the best state (by ``train.metric``) is
    kept and restored before the test evaluation.  The test split is never used for model selection.

    On CPU the run is repeatable bit for bit: besides the seeded generators, PyTorch's deterministic
    algorithms are switched on for the duration of the call (multi-threaded index-add kernels in the
    embedding backward otherwise differ in the last bits from run to run) and restored afterwards.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    if resolve_device(cfg.device).type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(cfg, dataset=dataset, callbacks=callbacks, run_dir=run_dir)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(cfg: RunConfig, *, dataset, callbacks: Sequence[Callback], run_dir: str | Path | None) -> TrainResult:
    # Imports here keep ``import dhns_search.training`` light for the CLI.
    from dhns_search.data import load_from_config
    from dhns_search.evaluation import FilteredEvaluator
    from dhns_search.models import KGEModel
    from dhns_search.training.dhns import DHNS
    from dhns_search.training.losses import kgc_loss, regularization_loss
    from dhns_search.training.negatives import make_negative_sampler

    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    cfg = cfg.model_copy(update={"device": device.type}, deep=True)  # the saved config says what ran
    run_path = Path(run_dir) if run_dir is not None else None

    # ---- set-up: data, model, generator, optimisers.  One seed drives everything.
    torch.manual_seed(cfg.seed)
    if dataset is None:
        dataset = load_from_config(cfg.data)
    train_triples, valid_triples = dataset.train.to(device), dataset.valid.to(device)
    model = KGEModel(dataset.num_entities, dataset.num_relations, cfg.model, dataset.features).to(device)
    sampler = make_negative_sampler(cfg.negatives, dataset.train, dataset.num_entities, dataset.num_relations)
    if cfg.dhns.enabled:
        cfg = _resolve_modalities(cfg, list(model.entities.modalities))
    dhns = DHNS(model, cfg.dhns, cfg.model, cfg.loss).to(device) if cfg.dhns.enabled else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    gen_optimizer = (
        torch.optim.Adam(dhns.generator.parameters(), lr=cfg.dhns.generator_lr) if dhns is not None else None
    )
    evaluator = FilteredEvaluator(
        [dataset.train, dataset.valid, dataset.test], dataset.num_entities, batch_size=cfg.train.eval_batch_size
    )
    index_rng = torch.Generator().manual_seed(cfg.seed)  # shuffling and base negatives (CPU)
    noise_rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # diffusion noise
    amp = cfg.dhns.precision == "bf16"

    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
        write_yaml(cfg, run_path / "config.yaml")

    n = train_triples.shape[0]
    batch_size = min(cfg.train.batch_size, n)
    n_batches = math.ceil(n / batch_size)
    metric = cfg.train.metric
    history: list[dict] = []
    best_value, best_epoch, best_valid, best_state = -math.inf, 0, {}, None
    bad_evals = 0
    stopped_early = False
    cached = None
    global_batch = 0
    epoch = 0

    with _progress(cfg.train.progress) as progress:
        task = progress.add_task("train", total=cfg.train.epochs, loss=float("nan"), diff=float("nan"), val="-")
        for epoch in range(1, cfg.train.epochs + 1):
            model.train()
            t_epoch = time.perf_counter()
            sums = {"train_loss": 0.0, "kgc_loss": 0.0, "ha_loss": 0.0, "diffusion_loss": 0.0}
            perm = torch.randperm(n, generator=index_rng).to(device)
            for b in range(n_batches):
                batch = train_triples[perm[b * batch_size : (b + 1) * batch_size]]
                optimizer.zero_grad(set_to_none=True)

                # 1. KGC loss on base negatives
                neg = sampler.sample(batch.cpu(), global_batch, index_rng).to(device)  # [B, K, 3]
                pos_score = model.score_triples(batch[:, 0], batch[:, 1], batch[:, 2])
                neg_score = model.score_triples(neg[..., 0], neg[..., 1], neg[..., 2])
                loss = kgc_loss(pos_score, neg_score, cfg.loss)
                if cfg.loss.regularizer != "none" and cfg.loss.reg_weight > 0:
                    loss = loss + cfg.loss.reg_weight * regularization_loss(model, cfg.loss)
                _check_finite(loss, "the KGC loss", epoch, b)
                sums["kgc_loss"] += loss.item()

                if dhns is not None:
                    # 2. generator update(s).  With dhns.detach_inputs false the diffusion loss also
                    #    leaves gradients on the KGC model (the released behaviour); they are kept for
                    #    the KGC step below because the model's gradients are not zeroed again.
                    #    The batch is shuffled, so its first rows are a random subset (dhns.generator_fraction).
                    n_gen = dhns.generator_rows_for(batch.shape[0])
                    regenerate = cached is None or global_batch % cfg.dhns.refresh_every == 0
                    n_new = dhns.rows_for(batch.shape[0]) if regenerate else 0
                    #    One detached computation of the conditions serves the update and the generation.
                    shared = dhns.shared_conditions(model, batch[: max(n_gen, n_new)])
                    gen_rows = batch[:n_gen]
                    gen_conditions = None if shared is None else (shared[0][:, :n_gen], shared[1][:, :n_gen])
                    for _ in range(cfg.dhns.generator_steps):
                        gen_optimizer.zero_grad(set_to_none=True)
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                            dloss = dhns.diffusion_loss(model, gen_rows, noise_rng, gen_conditions)
                        _check_finite(dloss, "the diffusion loss", epoch, b)
                        dloss.backward()
                        gen_optimizer.step()
                        sums["diffusion_loss"] += dloss.item() / cfg.dhns.generator_steps

                    # 3. generate hardness levels (no gradients); refreshed every k batches
                    if regenerate:
                        cond = None if shared is None else shared[1][:, :n_new]
                        cached = dhns.generate(model, batch[:n_new], noise_rng, cond)

                    # 4. NTAT loss on the generated negatives
                    ha = dhns.hardness_loss(model, cached, epoch)
                    _check_finite(ha, "the hardness-adaptive loss", epoch, b)
                    sums["ha_loss"] += ha.item()
                    loss = loss + cfg.dhns.weight * ha

                loss.backward()
                optimizer.step()
                sums["train_loss"] += loss.item()
                global_batch += 1

            stats = {k: v / n_batches for k, v in sums.items()}
            stats["epoch_seconds"] = time.perf_counter() - t_epoch
            progress.update(task, advance=1, loss=stats["train_loss"], diff=stats["diffusion_loss"])
            for cb in callbacks:
                hook = getattr(cb, "on_epoch_end", None)
                if hook is not None:
                    hook(epoch, stats)

            # ---- evaluate, keep the best, stop early
            if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
                model.eval()
                t_eval = time.perf_counter()
                valid = evaluator.evaluate(model, valid_triples)
                record = {"epoch": epoch, **stats, "eval_seconds": time.perf_counter() - t_eval, "valid": valid}
                history.append(record)
                value = valid[metric]
                progress.update(task, val=f"{value:.4f}")
                if value > best_value:
                    best_value, best_epoch, best_valid, bad_evals = value, epoch, valid, 0
                    best_state = _snapshot(model, dhns)
                    if run_path is not None:
                        _save_checkpoint(run_path / "checkpoint.pt", cfg, epoch, best_state, valid)
                else:
                    bad_evals += 1
                if run_path is not None:
                    (run_path / "metrics.json").write_text(json.dumps(history, indent=1))
                for cb in callbacks:  # may raise StopTraining (pruning)
                    hook = getattr(cb, "on_evaluation", None)
                    if hook is not None:
                        hook(epoch, valid, history)
                if cfg.train.patience and bad_evals >= cfg.train.patience:
                    stopped_early = True
                    break

    # ---- restore the best state and test it
    if best_state is not None:
        model.load_state_dict(best_state["model"])
    test = None
    if cfg.train.test:
        model.eval()
        test = evaluator.evaluate(model, dataset.test.to(device))
    result = TrainResult(
        config=cfg,
        best_epoch=best_epoch,
        best_valid=best_valid,
        test=test,
        history=history,
        epochs_run=epoch,
        seconds=time.perf_counter() - t_start,
        run_dir=run_path,
        dataset_fingerprint=dataset.fingerprint(),
        stopped_early=stopped_early,
    )
    if run_path is not None:
        (run_path / "result.json").write_text(json.dumps(result_summary(result), indent=1))
    return result


def _resolve_modalities(cfg: RunConfig, available: list[str]) -> RunConfig:
    """Keep the semantic levels whose tables exist; the saved config then says what really ran."""
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


def _snapshot(model: torch.nn.Module, dhns) -> dict:
    state = {"model": copy.deepcopy(model.state_dict())}
    if dhns is not None:
        state["generator"] = copy.deepcopy(dhns.generator.state_dict())
    return state


def _save_checkpoint(path: Path, cfg: RunConfig, epoch: int, state: dict, valid: dict) -> None:
    payload = {"config": cfg.model_dump(mode="json"), "epoch": epoch, "valid": valid, **state}
    atomic_write(path, lambda f: torch.save(payload, f))


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
