"""Run every arm of an ablation over the same seeds, resumably, one run folder per arm and seed.

Layout of the output folder::

    OUT/ablation.yaml          the ablation file and the command-line overrides, as run
    OUT/<arm>/config.yaml      the arm's requested configuration (before the seed)
    OUT/<arm>/seed-<s>/        a training run folder (config, metrics.json, checkpoint.pt, result.json)
    OUT/summary.json, OUT/comparison.md, OUT/curves.png   (written by :mod:`.report`)

Runs go seed by seed (every arm with seed 0, then with seed 1, ...), so partial results are already
paired.  Running the same command again skips finished runs, resumes interrupted ones from their last
checkpoint (bit for bit on CPU) and refuses an output folder made with another configuration.  Several
processes (or machines sharing the folder) may run the same comparison at once: each run is trained by the
one process that holds its lock (:func:`run_comparison`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import Timeout

from dhns_search.ablation.spec import AblationSpec, arm_config
from dhns_search.config.io import config_differences, read_yaml_mapping, validate_config, write_yaml
from dhns_search.config.models import RunConfig
from dhns_search.errors import ConfigError
from dhns_search.files import file_lock
from dhns_search.training.loop import CONFIG_FILE, METRICS_FILE, RESULT_FILE, TrainingInterrupted
from dhns_search.training.runs import seed_dir

__all__ = ["Comparison", "RunRecord", "StoppedWaiting", "prepare", "run_comparison"]


@dataclass
class RunRecord:
    """One arm with one seed: its folder, evaluation history so far and final result (None until done)."""

    arm: str
    seed: int
    path: Path
    history: list[dict] = field(default_factory=list)
    result: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.result is not None

    def refresh(self) -> RunRecord:
        """Re-read ``metrics.json`` and ``result.json`` from the run folder."""
        metrics, result = self.path / METRICS_FILE, self.path / RESULT_FILE
        self.history = json.loads(metrics.read_text()) if metrics.is_file() else []
        self.result = json.loads(result.read_text()) if result.is_file() else None
        return self


@dataclass
class Comparison:
    """A prepared ablation: its spec, output folder, arm configurations and runs."""

    name: str
    spec: AblationSpec
    out: Path
    configs: dict[str, RunConfig]
    seeds: list[int]
    runs: dict[tuple[str, int], RunRecord]

    @property
    def arms(self) -> list[str]:
        return list(self.configs)

    def records(self, arm: str) -> list[RunRecord]:
        return [self.runs[arm, s] for s in self.seeds]


def prepare(spec: AblationSpec, out: str | Path, *, name: str, overrides: list[str] | None = None,
            origin: Path | None = None, arms: list[str] | None = None,
            seeds: list[int] | None = None) -> Comparison:
    """Resolve every arm's configuration and the output folder (checked against what it already holds)."""
    out = Path(out)
    chosen = list(spec.arms) if arms is None else arms
    unknown = [a for a in chosen if a not in spec.arms]
    if unknown:
        raise ConfigError(f"--arms: {unknown} are not arms of this ablation ({list(spec.arms)})")
    if spec.reference not in chosen:
        chosen = [spec.reference, *chosen]
    configs = {}
    for arm in chosen:
        cfg = arm_config(spec, arm, overrides, origin=origin)
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"test_curve": True, "test": True})})
        _check_folder(out / arm / CONFIG_FILE, cfg, arm)
        configs[arm] = cfg
    seeds = spec.seed_list if seeds is None else seeds
    out.mkdir(parents=True, exist_ok=True)
    write_yaml({"ablation": spec.model_dump(mode="json"), "overrides": list(overrides or [])},
               out / "ablation.yaml")
    for arm, cfg in configs.items():
        write_yaml(cfg, out / arm / CONFIG_FILE)
    runs = {(a, s): RunRecord(a, s, seed_dir(out / a, s)).refresh() for a in configs for s in seeds}
    return Comparison(name=name, spec=spec, out=out, configs=configs, seeds=seeds, runs=runs)


def _check_folder(path: Path, cfg: RunConfig, arm: str) -> None:
    """Refuse to mix runs of another configuration into an existing output folder."""
    if not path.is_file():
        return
    old = read_yaml_mapping(path)
    try:  # a setting added since the folder was made reads as its default
        old = validate_config(old, str(path)).model_dump(mode="json")
    except ConfigError:
        pass  # compared as written: the difference is reported below
    new = cfg.model_dump(mode="json")
    for data in (old, new):  # neither the display nor where the configuration came from changes what trains
        data.get("train", {}).pop("progress", None)
        data.pop("provenance", None)
    if old != new:
        raise ConfigError(
            f"{path.parent}: arm {arm!r} was run with another configuration ({config_differences(old, new)}); "
            "choose another --out, or delete that folder to start the arm again"
        )


def run_comparison(comparison: Comparison, *, progress: bool = True, stop: threading.Event | None = None,
                   on_start: Callable[[RunRecord, bool], None] | None = None,
                   on_end: Callable[[Comparison, RunRecord], None] | None = None,
                   on_busy: Callable[[RunRecord], None] | None = None, poll: float = 5.0) -> Comparison:
    """Train every unfinished run (seed-major order), resuming interrupted ones; ``on_start(record,
    resumed)`` and ``on_end(comparison, record)`` are called around each.

    Several processes may run the same comparison at once (on one machine, or on machines that share the
    output folder on a file system with POSIX locks): a process trains a run only while it holds the run's
    file lock (``<arm>/.locks/seed-<s>.lock``), so each run is trained by one of them.  A run another process
    holds is passed over (``on_busy(record)``) and taken up after the runs nobody holds: this process waits
    for its lock (polling ``poll`` seconds, so that a stop request is heard) and then finds it finished, or
    resumes it from its checkpoint when the other process stopped first.  A dead process's lock is freed by
    the operating system, so nothing is left to clear by hand.
    """
    from dhns_search.data import load_from_config
    from dhns_search.training.checkpoint import CHECKPOINT
    from dhns_search.training.loop import train

    datasets: dict[str, Any] = {}

    def attempt(record: RunRecord, wait: bool) -> bool:
        """Train ``record`` if this process gets its lock (waiting for it when ``wait``); False when busy."""
        lock = file_lock(record.path, timeout=0)
        while True:
            try:
                lock.acquire(timeout=poll if wait else 0)
                break
            except Timeout:
                if not wait or (stop is not None and stop.is_set()):
                    return False
        try:
            if record.refresh().done:  # another process finished it (and reported it)
                return True
            cfg = comparison.configs[record.arm]
            cfg = cfg.model_copy(update={"seed": record.seed,
                                         "train": cfg.train.model_copy(update={"progress": progress})})
            key = cfg.data.model_dump_json()
            if key not in datasets:
                datasets[key] = load_from_config(cfg.data)
            resumed = (record.path / CHECKPOINT).is_file()
            if on_start is not None:
                on_start(record, resumed)
            train(cfg, dataset=datasets[key], run_dir=record.path, resume=resumed, stop=stop)
            record.refresh()
            if on_end is not None:
                on_end(comparison, record)
            return True
        finally:
            lock.release()

    busy: list[RunRecord] = []
    for seed in comparison.seeds:
        for arm in comparison.configs:
            record = comparison.runs[arm, seed]
            if record.refresh().done:
                continue
            if not attempt(record, wait=False):
                busy.append(record)
                if on_busy is not None:
                    on_busy(record)
    for record in busy:  # held by other processes when this one came to them
        if not attempt(record, wait=True):
            raise StoppedWaiting(record)
    return comparison


class StoppedWaiting(TrainingInterrupted):
    """A stop request came while this process waited for a run that another process trains."""

    def __init__(self, record: RunRecord) -> None:
        Exception.__init__(self, f"stopped while another process trains arm {record.arm!r} seed {record.seed} "
                           f"({record.path})")
        self.epoch, self.batch, self.checkpoint = 0, 0, None
