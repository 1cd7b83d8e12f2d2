"""Final training runs: one config, one or several seeds, a run folder each, a summary across seeds.

A run folder holds what :func:`~dhns_search.training.loop.train` writes (``config.yaml``, ``metrics.json``,
``checkpoint.pt``, ``result.json``); with several seeds, the folder holds one such folder per seed
(``seed-<n>``) and ``summary.json``.  :data:`RUN_FILES` is that list, the one the command line checks
before it replaces a folder.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dhns_search.config.io import load_config
from dhns_search.config.models import RunConfig
from dhns_search.errors import WriteError, warn
from dhns_search.files import atomic_write_text
from dhns_search.training.checkpoint import CHECKPOINT
from dhns_search.training.loop import CONFIG_FILE, METRICS_FILE, RESULT_FILE, TrainResult, train

__all__ = ["BEFORE_CHECKPOINT", "RUN_FILES", "SEED_PREFIX", "SUMMARY_FILE", "SeedSummary", "after_write_failure",
           "default_run_dir", "discard_unstarted", "is_replay", "is_run_folder", "resume_run", "run_config",
           "seed_dir", "train_seeds"]

#: the means and standard deviations over the seeds of a run of several seeds
SUMMARY_FILE = "summary.json"
#: every file a run folder may hold (one seed's folder, or the folder of several seeds with its summary)
RUN_FILES = (CONFIG_FILE, CHECKPOINT, METRICS_FILE, RESULT_FILE, SUMMARY_FILE)
#: what a run has written before its first checkpoint (nothing of it can be continued)
BEFORE_CHECKPOINT = (CONFIG_FILE, METRICS_FILE)
#: the name of a seed's folder in the folder of several seeds, before the seed
SEED_PREFIX = "seed-"


@dataclass
class SeedSummary:
    results: list[TrainResult]
    mean: dict[str, float]
    std: dict[str, float]
    out_dir: Path | None
    #: ``(expected, got)`` when the config carries a provenance validation value to reproduce
    reproduction: tuple[float, float] | None = None

    @property
    def reproduced(self) -> bool | None:
        if self.reproduction is None:
            return None
        expected, got = self.reproduction
        return expected == got


def seed_dir(out: Path, seed: int) -> Path:
    """The folder of seed ``seed`` in the folder ``out`` of a run of several seeds."""
    return out / f"{SEED_PREFIX}{seed}"


def is_run_folder(path: Path) -> bool:
    """Whether the folder ``path`` holds a run (one of :data:`RUN_FILES`, or a seed's folder)."""
    return any((path / name).exists() for name in RUN_FILES) or any(path.glob(f"{SEED_PREFIX}*"))


def discard_unstarted(folder: Path, created: Path | None = None) -> None:
    """Remove what a run wrote into ``folder`` before its first checkpoint (:data:`BEFORE_CHECKPOINT`:
    nothing of it can be continued), then ``folder`` and ``created`` (the folder of its seeds, when the run
    created it) if they are left empty."""
    for name in BEFORE_CHECKPOINT:
        (folder / name).unlink(missing_ok=True)
    for empty in (folder, created) if created is not None else (folder,):
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()


def after_write_failure(err: WriteError, out_dir: Path, *, created: bool) -> WriteError:
    """Tidy up after a run that could not write into ``out_dir`` (a full disk ...) and say how to go on: a
    run that checkpointed continues with ``train --resume``; what a run wrote before its first checkpoint is
    removed (:func:`discard_unstarted`, with ``out_dir`` when the run ``created`` it), so the same command
    starts it again; with several seeds, the seeds that finished are kept."""
    folder = Path(str(err.path)).parent  # the run's folder (a seed's, with --seeds N)
    if (folder / CHECKPOINT).is_file():
        return WriteError(err.path, f"{err.reason}; the run is checkpointed: continue it with dhns-search train "
                          f"--resume {folder} once there is space")
    discard_unstarted(folder, out_dir if created else None)
    if out_dir.is_dir() and any(out_dir.iterdir()):  # --seeds N: the seeds that finished are kept
        return WriteError(err.path, f"{err.reason}; the seeds that finished are in {out_dir}: run the same command "
                          "with --force once there is space")
    return WriteError(err.path, f"{err.reason}; nothing was kept: run the same command again once there is space")


def run_config(folder: str | Path) -> RunConfig:
    """The configuration a run folder ran (its ``config.yaml``)."""
    return load_config(Path(folder) / CONFIG_FILE)


def resume_run(folder: str | Path, cfg: RunConfig | None = None, *, stop: threading.Event | None = None,
               ) -> SeedSummary:
    """Continue the run in ``folder`` (one seed's folder) from its checkpoint with the configuration it ran
    (``cfg``: :func:`run_config` of the folder when not given); the summary of that one seed."""
    folder = Path(folder)
    cfg = cfg if cfg is not None else run_config(folder)
    return _summary(cfg, [train(cfg, run_dir=folder, resume=True, stop=stop)], folder)


def default_run_dir(root: str | Path = "runs", name: str = "run") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    i = 1
    while path.exists():
        path = Path(root) / f"{name}-{stamp}-{i}"
        i += 1
    return path


def _flat(result: TrainResult) -> dict[str, float]:
    out = {f"valid/{k}": v for k, v in result.best_valid.items()}
    if result.test:
        out.update({f"test/{k}": v for k, v in result.test.items()})
    return out


def train_seeds(cfg: RunConfig, *, seeds: int = 1, out_dir: str | Path | None = None, dataset=None) -> SeedSummary:
    """Train ``cfg`` with ``seeds`` consecutive seeds (``cfg.seed``, ``cfg.seed + 1``, ...).

    Each seed gets a sub-folder ``seed-<n>`` of ``out_dir`` (or ``out_dir`` itself for one seed).  When the
    configuration was exported from a study (``provenance.valid_value``), the first seed's validation
    metric is compared with it: on CPU it reproduces exactly.
    """
    if dataset is None:
        from dhns_search.data import load_from_config

        dataset = load_from_config(cfg.data)
        for message in dataset.warnings:
            warn(message)
    out = Path(out_dir) if out_dir is not None else None
    results = []
    for i in range(seeds):
        run_cfg = cfg.model_copy(update={"seed": cfg.seed + i}, deep=True)
        run_dir = None if out is None else (out if seeds == 1 else seed_dir(out, run_cfg.seed))
        results.append(train(run_cfg, dataset=dataset, run_dir=run_dir))
    summary = _summary(cfg, results, out)
    if out is not None and seeds > 1:
        atomic_write_text(out / SUMMARY_FILE, json.dumps({"mean": summary.mean, "std": summary.std, "seeds": seeds},
                                                         indent=1))
    return summary


def is_replay(cfg: RunConfig) -> bool:
    """The configuration replays a study's trial: it was exported from one (``provenance.study``) and keeps the
    trial's seed (a preset made from a trial and trained on other seeds is not a replay of it)."""
    prov = cfg.provenance or {}
    return bool(prov.get("study")) and prov.get("seed", cfg.seed) == cfg.seed


def _summary(cfg: RunConfig, results: list[TrainResult], out: Path | None) -> SeedSummary:
    """Means and standard deviations over ``results`` (the seeds of ``cfg``); when the configuration was
    exported from a study, its validation value beside the first seed's."""
    flats = [_flat(r) for r in results]
    keys = [k for k in flats[0] if all(k in f for f in flats)]
    mean = {k: statistics.fmean(f[k] for f in flats) for k in keys}
    std = {k: (statistics.stdev(f[k] for f in flats) if len(flats) > 1 else 0.0) for k in keys}
    reproduction = None
    prov = cfg.provenance or {}
    if isinstance(prov.get("valid_value"), (int, float)) and is_replay(cfg):
        reproduction = (float(prov["valid_value"]), results[0].best_value)
    return SeedSummary(results=results, mean=mean, std=std, out_dir=out, reproduction=reproduction)
