"""Leaderboards and standalone configs of the best trials.

An exported config is a complete :class:`~dhns_search.config.models.RunConfig` that
``dhns-search train --config FILE`` replays as is: the trial's resolved configuration with
``train.epochs`` set to the trial's best epoch, the trial's seed, ``train.test: true``, and a
``provenance`` section (study, trial, validation metric and value, package versions, dataset
fingerprint).  On CPU the replay reproduces the trial's validation metric exactly.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dhns_search.config.io import dump_yaml, validate_config
from dhns_search.config.models import RunConfig
from dhns_search.errors import StudyError
from dhns_search.search.space import format_value

__all__ = [
    "LeaderRow",
    "export_best",
    "export_trials",
    "leaderboard",
    "leaderboard_csv",
    "leaderboard_markdown",
    "package_versions",
    "state_counts",
    "trial_config",
]


@dataclass
class LeaderRow:
    rank: int
    number: int
    value: float
    best_epoch: int | None
    seed: int | None
    seconds: float | None
    params: dict[str, Any] = field(default_factory=dict)


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), every state listed."""
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                  TrialState.RUNNING, TrialState.WAITING)}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The sampled Optuna values of a trial, by parameter name."""
    return dict(trial.params)


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with a finite value, best first (ties: lower trial number first)."""
    trials = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and not math.isnan(t.value)
    ]
    return sorted(trials, key=lambda t: (-t.value, t.number))


def leaderboard(study: optuna.Study, top: int | None = None) -> list[LeaderRow]:
    """The best completed trials, best first."""
    rows = []
    for rank, t in enumerate(completed(study)[: top if top else None], start=1):
        rows.append(LeaderRow(
            rank=rank,
            number=t.number,
            value=float(t.value),
            best_epoch=t.user_attrs.get("best_epoch"),
            seed=t.user_attrs.get("seed"),
            seconds=_duration(t),
            params=trial_params(t),
        ))
    return rows


def _param_names(rows: list[LeaderRow]) -> list[str]:
    names: list[str] = []
    for r in rows:
        names += [k for k in r.params if k not in names]
    return names


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return format_value(value)


def leaderboard_csv(rows: list[LeaderRow]) -> str:
    names = _param_names(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "trial", "value", "best_epoch", "seed", "seconds", *names])
    for r in rows:
        writer.writerow([r.rank, r.number, repr(r.value), r.best_epoch, r.seed,
                         "" if r.seconds is None else f"{r.seconds:.1f}",
                         *("" if n not in r.params else _cell(r.params[n]) for n in names)])
    return buf.getvalue()


def leaderboard_markdown(rows: list[LeaderRow], *, metric: str = "value") -> str:
    names = _param_names(rows)
    head = ["rank", "trial", metric, "best epoch", "seconds", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r.rank), str(r.number), f"{r.value:.4f}", str(r.best_epoch),
                 "" if r.seconds is None else f"{r.seconds:.1f}",
                 *("" if n not in r.params else _cell(r.params[n]) for n in names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def package_versions() -> dict[str, str]:
    out = {}
    for dist in ("dhns-search", "torch", "optuna"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def trial_config(study: optuna.Study, trial: FrozenTrial) -> RunConfig:
    """The standalone training configuration that replays ``trial`` (see the module docstring)."""
    data = trial.user_attrs.get("config")
    if not isinstance(data, dict):
        raise StudyError(f"study {study.study_name!r}, trial {trial.number}: no resolved configuration was "
                         "recorded (was it run by dhns-search run?)")
    data = dict(data)
    train = dict(data.get("train", {}))
    best_epoch = trial.user_attrs.get("best_epoch")
    if isinstance(best_epoch, int) and best_epoch > 0:
        train["epochs"] = best_epoch
    train["test"] = True
    train["progress"] = True  # display only; the search turned it off
    data["train"] = train
    if "seed" in trial.user_attrs:
        data["seed"] = trial.user_attrs["seed"]
    versions = package_versions()
    data["provenance"] = {
        "study": study.study_name,
        "trial": trial.number,
        "valid_metric": train.get("metric", "mrr_realistic_filtered"),
        "valid_value": float(trial.value) if trial.value is not None else None,
        "best_epoch": best_epoch if isinstance(best_epoch, int) else None,
        "dataset_fingerprint": trial.user_attrs.get("dataset_fingerprint"),
        "dhns_search_version": versions["dhns-search"],
        "torch_version": versions["torch"],
        "optuna_version": versions["optuna"],
    }
    return validate_config(data, f"study {study.study_name!r}, trial {trial.number}")


def _header(cfg: RunConfig) -> str:
    p = cfg.provenance or {}
    return (
        f"# Exported by dhns-search from study {p.get('study')!r}, trial {p.get('trial')}:\n"
        f"# validation {p.get('valid_metric')} = {p.get('valid_value')} at epoch {p.get('best_epoch')}.\n"
        f"# Replay it with:  dhns-search train --config THIS_FILE\n"
    )


def write_config(cfg: RunConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_header(cfg) + dump_yaml(cfg), encoding="utf-8")
    tmp.replace(path)
    return path


def config_text(cfg: RunConfig) -> str:
    return _header(cfg) + dump_yaml(cfg)


def _is_dir_target(out: str | Path) -> bool:
    text = str(out)
    return Path(out).is_dir() or text.endswith(("/", "\\"))


def export_trials(study: optuna.Study, *, top: int = 1, out: str | Path | None = None) -> list[tuple[Path, RunConfig]]:
    """Write the configs of the ``top`` best trials; returns ``(path, config)`` best first.

    ``out`` None: ``exports/<study>-trial<N>.yaml``.  ``out`` an existing directory or a path ending in
    ``/``: ``<out>/<study>-trial<N>.yaml``.  Otherwise, with ``top`` 1 that exact file; with
    ``top`` > 1 the rank is added before the suffix (``best.yaml`` -> ``best-1.yaml``, ``best-2.yaml``).
    """
    if top < 1:
        raise StudyError(f"--top must be at least 1 (got {top})")
    trials = completed(study)
    if not trials:
        counts = ", ".join(f"{k.lower()} {v}" for k, v in state_counts(study).items() if v)
        raise StudyError(f"study {study.study_name!r} has no completed trial to export ({counts or 'no trials'})")
    written = []
    for rank, trial in enumerate(trials[:top], start=1):
        cfg = trial_config(study, trial)
        default_name = f"{study.study_name}-trial{trial.number}.yaml"
        if out is None:
            path = Path("exports") / default_name
        elif _is_dir_target(out):
            path = Path(out) / default_name
        else:
            out_path = Path(out)
            path = out_path if top == 1 else out_path.with_name(f"{out_path.stem}-{rank}{out_path.suffix or '.yaml'}")
        written.append((write_config(cfg, path), cfg))
    return written


def export_best(study_name: str, *, storage: str | None = None, top: int = 1,
                out: str | Path | None = None) -> list[tuple[Path, RunConfig]]:
    """Open ``study_name`` (see :func:`dhns_search.search.study.open_study`) and export its best trials."""
    from dhns_search.search.study import open_study

    study, _ = open_study(study_name, storage)
    return export_trials(study, top=top, out=out)
