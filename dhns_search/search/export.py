"""Standalone configs of the best trials, and the files they are written to.

An exported config is a complete :class:`~dhns_search.config.models.RunConfig` that
``dhns-search train --config FILE`` replays as is: the trial's resolved configuration with
``train.epochs`` set to the trial's best epoch (a cosine schedule keeps the trial's horizon in
``train.lr_horizon``), the trial's seed, ``train.test: true``, and a
``provenance`` section (study, trial, validation metric and value, package versions, dataset
fingerprint; for a multi-objective study also the objective values and the ``--pick`` that chose it).
On CPU the replay reproduces the trial's validation metric exactly.

Which trials: the best *feasible* ones by the primary objective, or the one a ``--pick`` chooses from the
Pareto front (see :mod:`dhns_search.search.queries`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from dhns_search.config.io import dump_yaml, validate_config
from dhns_search.config.models import RunConfig
from dhns_search.errors import StudyError
from dhns_search.files import atomic_write_text
from dhns_search.search import pareto, trial_data
from dhns_search.search.objectives import study_objectives
from dhns_search.search.queries import completed, completed_where, no_trial_message, pick_trial, primary_value
from dhns_search.search.storage import open_study
from dhns_search.tracking.provenance import package_versions

__all__ = ["config_text", "export_best", "export_trials", "package_versions", "trial_config", "write_config"]


def trial_config(study: optuna.Study, trial: FrozenTrial, *, pick: str | None = None) -> RunConfig:
    """The standalone training configuration that replays ``trial`` (see the module docstring);
    ``pick`` (e.g. ``"knee"``) is recorded in the provenance."""
    data = trial_data.read(trial, "config")
    if not isinstance(data, dict):
        raise StudyError(f"study {study.study_name!r}, trial {trial.number}: no resolved configuration was "
                         "recorded (was it run by dhns-search run?)")
    data = dict(data)
    train = dict(data.get("train", {}))
    best_epoch = trial.user_attrs.get("best_epoch")
    if isinstance(best_epoch, int) and best_epoch > 0:
        if train.get("lr_schedule") == "cosine" and train.get("lr_horizon") is None:
            train["lr_horizon"] = train.get("epochs")  # the rates depend on the trial's horizon, not where it stopped
        train["epochs"] = best_epoch
    train["test"] = True
    train["progress"] = True  # display only; the search turned it off
    data["train"] = train
    if "seed" in trial.user_attrs:
        data["seed"] = trial.user_attrs["seed"]
    versions = package_versions()
    metric = train.get("metric", "mrr_realistic_filtered")
    specs = study_objectives(study)
    best_valid = trial_data.read(trial, "best_valid")
    if isinstance(best_valid, dict) and isinstance(best_valid.get(metric), (int, float)):
        valid_value: float | None = float(best_valid[metric])
    elif trial.values:
        valid_value = primary_value(trial, specs)
    else:
        valid_value = None
    data["provenance"] = {
        "study": study.study_name,
        "trial": trial.number,
        "valid_metric": metric,
        "valid_value": valid_value,
        "seed": trial.user_attrs.get("seed"),  # the trial's: a run of another seed is not a replay of it
        "best_epoch": best_epoch if isinstance(best_epoch, int) else None,
        "dataset_fingerprint": trial.user_attrs.get("dataset_fingerprint"),
        "dhns_search_version": versions["dhns-search"],
        "torch_version": versions["torch"],
        "optuna_version": versions["optuna"],
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
    }
    if len(specs) > 1 and trial.values:
        data["provenance"]["objectives"] = ", ".join(
            f"{s.name}={v!r} ({s.arrow})" for s, v in zip(specs, trial.values))
    if pick is not None:
        data["provenance"]["pick"] = str(pick)
    return validate_config(data, f"study {study.study_name!r}, trial {trial.number}")


def _header(cfg: RunConfig) -> str:
    p = cfg.provenance or {}
    lines = [f"# Exported by dhns-search from study {p.get('study')!r}, trial {p.get('trial')}"
             + (f", chosen by --pick {p['pick']}" if p.get("pick") else "") + ":",
             f"# validation {p.get('valid_metric')} = {p.get('valid_value')} at epoch {p.get('best_epoch')}."]
    if p.get("objectives"):
        lines.append(f"# objectives: {p['objectives']}")
    lines.append("# Replay it with:  dhns-search train --config THIS_FILE")
    return "\n".join(lines) + "\n"


def config_text(cfg: RunConfig) -> str:
    """An exported config as YAML, with a header comment saying where it comes from."""
    return _header(cfg) + dump_yaml(cfg)


def write_config(cfg: RunConfig, path: Path) -> Path:
    return atomic_write_text(path, config_text(cfg))


def _is_dir_target(out: str | Path) -> bool:
    text = str(out)
    return Path(out).is_dir() or text.endswith(("/", "\\"))


def _target(study_name: str, trial: FrozenTrial, out: str | Path | None, rank: int, many: bool) -> Path:
    """The file of one exported trial (see :func:`export_trials`)."""
    default_name = f"{study_name}-trial{trial.number}.yaml"
    if out is None:
        return Path("exports") / default_name
    if _is_dir_target(out):
        return Path(out) / default_name
    out_path = Path(out)
    return out_path.with_name(f"{out_path.stem}-{rank}{out_path.suffix or '.yaml'}") if many else out_path


def export_trials(study: optuna.Study, *, top: int | None = None, out: str | Path | None = None,
                  pick: pareto.Pick | str | None = None, force: bool = False,
                  where: Mapping[str, Any] | None = None) -> list[tuple[Path, RunConfig]]:
    """Write the configs of the ``top`` best feasible trials, or of the one trial ``pick`` chooses;
    returns ``(path, config)`` best first.

    Neither given: the best trial of a single-objective study, the knee of a multi-objective one.
    ``out`` None: ``exports/<study>-trial<N>.yaml``.  ``out`` an existing directory or a path ending in
    ``/``: ``<out>/<study>-trial<N>.yaml``.  Otherwise, with one trial that exact file; with
    ``top`` > 1 the rank is added before the suffix (``best.yaml`` -> ``best-1.yaml``, ``best-2.yaml``).
    A file that exists already (given with ``out`` or the default one) is refused, nothing written, unless
    ``force``.
    ``where`` (parameter name -> value) keeps only the trials with those values, e.g. the best trial with
    ``dhns.enabled`` false (:func:`~dhns_search.search.queries.completed_where`).
    """
    if out is not None and not str(out).strip():
        raise StudyError("--out: empty; give a file or a folder, or leave --out out for exports/")
    if top is not None and top < 1:
        raise StudyError(f"--top must be at least 1 (got {top})")
    if pick is not None and top is not None:
        raise StudyError("--pick chooses one trial and --top the K best by the primary objective: give one of them")
    if isinstance(pick, str):
        pick = pareto.parse_pick(pick)
    if pick is None and top is None and len(study_objectives(study)) > 1:
        pick = pareto.Pick("knee")
    if pick is not None:
        chosen = [pick_trial(study, pick, where)]
        top = 1
    else:
        top = top or 1
        chosen = completed_where(study, where)[:top]
        if not chosen:
            if where and completed(study):
                shown = ", ".join(f"{k}={v}" for k, v in where.items())
                raise StudyError(f"study {study.study_name!r} has no feasible completed trial with {shown}")
            raise StudyError(no_trial_message(study))
    targets = [_target(study.study_name, trial, out, rank, top != 1) for rank, trial in enumerate(chosen, start=1)]
    taken = [str(p) for p in targets if p.exists()]
    if taken and not force:  # the default exports/ file too: it may have been edited since
        raise StudyError(f"{', '.join(taken)} exists already; give another --out, or --force to replace it")
    written = []
    for trial, target in zip(chosen, targets):
        cfg = trial_config(study, trial, pick=None if pick is None else str(pick))
        written.append((write_config(cfg, target), cfg))
    return written


def export_best(study_name: str, *, storage: str | None = None, top: int | None = None,
                out: str | Path | None = None, pick: pareto.Pick | str | None = None,
                force: bool = False, where: Mapping[str, Any] | None = None) -> list[tuple[Path, RunConfig]]:
    """Open ``study_name`` (see :func:`dhns_search.search.storage.open_study`) and export its best trials
    (or the trial ``pick`` chooses; see :func:`export_trials`)."""
    if isinstance(pick, str):
        pick = pareto.parse_pick(pick)  # a bad --pick is reported before the study is opened
    if out is not None and not str(out).strip():
        raise StudyError("--out: empty; give a file or a folder, or leave --out out for exports/")
    study, _ = open_study(study_name, storage)
    return export_trials(study, top=top, out=out, pick=pick, force=force, where=where)
