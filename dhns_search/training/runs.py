"""Final training runs: one config, one or several seeds, a run folder each, a summary across seeds."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from dhns_search.config.models import RunConfig
from dhns_search.errors import warn
from dhns_search.files import atomic_write_text
from dhns_search.training.loop import TrainResult, train


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
        run_dir = None if out is None else (out if seeds == 1 else out / f"seed-{run_cfg.seed}")
        results.append(train(run_cfg, dataset=dataset, run_dir=run_dir))
    flats = [_flat(r) for r in results]
    keys = [k for k in flats[0] if all(k in f for f in flats)]
    mean = {k: statistics.fmean(f[k] for f in flats) for k in keys}
    std = {k: (statistics.stdev(f[k] for f in flats) if len(flats) > 1 else 0.0) for k in keys}
    reproduction = None
    prov = cfg.provenance or {}
    if isinstance(prov.get("valid_value"), (int, float)):
        reproduction = (float(prov["valid_value"]), results[0].best_value)
    summary = SeedSummary(results=results, mean=mean, std=std, out_dir=out, reproduction=reproduction)
    if out is not None and seeds > 1:
        atomic_write_text(out / "summary.json", json.dumps({"mean": mean, "std": std, "seeds": seeds}, indent=1))
    return summary
