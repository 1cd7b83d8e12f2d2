"""``dhns-search train`` in MLflow: final runs and replays of exported trials, next to the trials.

A run is logged when ``--tracking-uri`` is given, or when the configuration is an export of a study
(``provenance.study``; then into the default tracking store unless ``--tracking-uri`` says otherwise;
``--tracking-uri none`` logs nothing):

- the experiment is the study's (an export) or the config's name; a replay's runs are nested under the
  trial's run (under the study's parent run when the trial's run is not in this store), named after the
  trial (``trial-0007 replay (seed 42)``), and carry the tags ``dhns.role=replay``, ``dhns.state=REPLAY``,
  ``dhns.replay_of`` (the trial's MLflow run id), ``dhns.study``, ``dhns.trial_number`` and
  ``dhns.reproduction``, and a description that links to the trial's run and says whether its validation
  value was reproduced; the trial's description then lists its replays, each a link to its run;
- one run per seed (params: the trial's searched parameters first when the trial's run is found, then
  the configuration under ``zconfig.``; metrics: the trial's lean set per epoch, ``objective`` = the best
  validation value, ``test_*`` of the configured rank policy; artifacts ``config.yaml``, ``result.json``),
  and with ``--seeds N`` a summary run (the seed runs nested under it) with the means and standard
  deviations over the seeds.

The runs are written when training has finished (their start and end times are those of the training);
the summary run is RUNNING meanwhile, and FAILED if training fails.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhns_search.config.flat import flatten_config
from dhns_search.config.io import dump_yaml
from dhns_search.config.models import RunConfig
from dhns_search.tracking.metrics import RANK_BASES, rank_policy
from dhns_search.tracking.store import DEFAULT_TRACKING_URI

__all__ = ["TrackedRuns", "tracking_target", "train_tracked"]

#: the section of a trial's description that lists its replays
_REPLAYS = "**Replays**"


@dataclass
class TrackedRuns:
    """Where the runs of one ``train`` went."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    run_ids: list[str] = field(default_factory=list)  # one per seed
    summary_run_id: str | None = None
    replay_of: str | None = None  # the trial's run id


def tracking_target(cfg: RunConfig, tracking_uri: str | None) -> str | None:
    """The tracking URI a ``train`` of ``cfg`` logs to, or None (see the module docstring)."""
    if tracking_uri is not None:
        return None if tracking_uri.strip().lower() in ("", "none") else tracking_uri
    return DEFAULT_TRACKING_URI if (cfg.provenance or {}).get("study") else None


def train_tracked(cfg: RunConfig, *, name: str, seeds: int = 1, out_dir: str | Path | None = None,
                  tracking_uri: str | None = None) -> tuple[Any, TrackedRuns | None]:
    """Train ``cfg`` with ``seeds`` seeds (:func:`dhns_search.training.runs.train_seeds`) and log the runs
    to MLflow when :func:`tracking_target` says so; returns the seed summary and where the runs went."""
    from dhns_search.data import load_from_config
    from dhns_search.errors import warn
    from dhns_search.training.runs import train_seeds

    uri = tracking_target(cfg, tracking_uri)
    dataset = load_from_config(cfg.data)
    for message in dataset.warnings:
        warn(message)
    if uri is None:
        return train_seeds(cfg, seeds=seeds, out_dir=out_dir, dataset=dataset), None
    logger = _TrainRunLogger(uri, cfg, name=name, seeds=seeds, dataset=dataset)
    t0 = time.time()
    try:
        summary = train_seeds(cfg, seeds=seeds, out_dir=out_dir, dataset=dataset)
    except BaseException:
        logger.fail()
        raise
    logger.log(summary, started=t0)
    return summary, logger.runs


class _TrainRunLogger:
    """The MLflow side of :func:`train_tracked`: every tracked `train` run, a replay of a trial or not."""

    def __init__(self, uri: str, cfg: RunConfig, *, name: str, seeds: int, dataset: Any) -> None:
        from dhns_search.tracking.provenance import run_provenance
        from dhns_search.tracking.tracker import Tracker

        self.cfg, self.seeds, self.dataset = cfg, seeds, dataset
        self.prov = dict(cfg.provenance or {})
        self.tracker = Tracker(uri)
        experiment = str(self.prov.get("study") or name)
        exp_id = self.tracker.experiment(experiment)
        self.runs = TrackedRuns(uri, experiment, exp_id)
        self.trial_run = self._trial_run()
        self.runs.replay_of = self.trial_run.run_id if self.trial_run is not None else None
        self.provenance = run_provenance(cfg.device, source="dhns-search train")
        #: where the runs nest: the trial's run, else the study's parent run, else nowhere
        self.home = self.runs.replay_of or self._study_parent()
        if seeds > 1:
            self.runs.summary_run_id = self._start(self._name(f"{seeds} seeds"), "REPLAY" if self.replay else "TRAIN",
                                                   parent=self.home)

    @property
    def replay(self) -> bool:
        from dhns_search.training.runs import is_replay

        return is_replay(self.cfg)

    def _name(self, what: str) -> str:
        """``trial-0007 replay (seed 42)``, ``train (seed 42)``."""
        trial = self.prov.get("trial") if self.replay else None
        return (f"trial-{int(trial):04d} replay" if trial is not None else "replay" if self.replay else "train") + \
            f" ({what})"

    def _study_parent(self) -> str | None:
        """The study's parent run (a replay whose trial's run is not in this store is nested there)."""
        if not self.replay:
            return None
        found = self.tracker.find_runs(self.runs.experiment_id, {"dhns.role": "parent",
                                                                 "dhns.study": self.prov.get("study")})
        return found[-1].run_id if found else None

    def _link(self, run_id: str, text: str) -> str:
        """A markdown link to a run's page (relative: the UI's own address)."""
        return f"[{text}](#/experiments/{self.runs.experiment_id}/runs/{run_id})"

    def _trial_run(self) -> Any:
        """The MLflow run of the exported trial (by its id, else by its study and number), or None."""
        if not self.replay:
            return None
        run_id = self.prov.get("mlflow_run_id")
        if run_id:
            with contextlib.suppress(Exception):  # another tracking store: look it up by its tags below
                return self.tracker.get_run(str(run_id))
        found = self.tracker.find_runs(self.runs.experiment_id, {
            "dhns.role": "trial", "dhns.trial_number": self.prov.get("trial"), "dhns.study": self.prov.get("study")},
            limit=1)
        return found[0] if found else None

    def _tags(self, state: str) -> dict[str, Any]:
        tags: dict[str, Any] = {"dhns.role": "replay" if self.replay else "train", "dhns.state": state,
                                "dhns.rank_policy": rank_policy(self.cfg.train.metric)}
        if self.replay:
            tags.update({"dhns.study": self.prov.get("study"), "dhns.trial_number": self.prov.get("trial"),
                         "dhns.replay_of": self.runs.replay_of})
        return tags

    def _start(self, run_name: str, state: str, *, parent: str | None = None, seed: int | None = None,
               start_ms: int | None = None) -> str:
        from dhns_search.tracking.tracker import ordered_params

        tags = self._tags(state) | ({"dhns.seed": seed} if seed is not None else {})
        run = self.tracker.start_run(self.runs.experiment_id, run_name, tags=tags, dataset=self.dataset,
                                     provenance=self.provenance, parent=parent, start_ms=start_ms)
        searched: dict[str, str] = {}
        if self.trial_run is not None:
            names = [n for n in self.trial_run.tags.get("dhns.sampled", "").split(",") if n]
            searched = {n: self.trial_run.params[n] for n in names if n in self.trial_run.params}
        run.log_params(ordered_params(searched, flatten_config(self.cfg)))
        return run.run_id

    def fail(self) -> None:
        if self.runs.summary_run_id:
            self.tracker.run(self.runs.summary_run_id).end("FAILED")

    def log(self, summary: Any, *, started: float) -> None:
        """One run per seed (nested under the summary run with several seeds), then the summary."""
        at = started
        for result in summary.results:
            self.runs.run_ids.append(self._log_seed(result, int(at * 1000)))
            at += result.seconds
        if self.runs.summary_run_id:
            self._log_summary(summary)
        self.link_trial()

    def _log_seed(self, result: Any, start_ms: int) -> str:
        from dhns_search.tracking.study import TrialRun

        seed = result.config.seed
        run_id = self._start(self._name(f"seed {seed}"), "REPLAY" if self.replay else "TRAIN",
                             parent=self.runs.summary_run_id or self.home, seed=seed, start_ms=start_ms)
        run = TrialRun(self.tracker, run_id, -1, policy_metric=self.cfg.train.metric)
        for record in result.history:
            epoch = int(record["epoch"])
            run.log_metrics({k: v for k, v in record.items() if k not in ("epoch", "valid", "test")}, step=epoch)
            run.log_validation(record.get("valid", {}), step=epoch)
        run.log_result(result.best_value, best_epoch=int(result.best_epoch),
                       result={"best_epoch": result.best_epoch, "best_valid": result.best_valid,
                               "test": result.test, "history": result.history}, best_valid=result.best_valid)
        run.log_metrics(self._test_metrics(result.test or {}) | {"train_seconds": result.seconds},
                        step=int(result.best_epoch))
        run.log_text(dump_yaml(result.config), "config.yaml")
        verdict, reproduction = self._verdict(result.best_value, seed)
        run.set_tags({"dhns.reproduction": reproduction})
        run.run.describe(verdict)
        run.run.end("FINISHED", end_ms=start_ms + int(result.seconds * 1000))
        return run_id

    def _test_metrics(self, test: dict[str, float]) -> dict[str, float]:
        policy = rank_policy(self.cfg.train.metric)
        return {f"test_{b}": float(test[f"{b}_{policy}_filtered"]) for b in RANK_BASES
                if f"{b}_{policy}_filtered" in test}

    def _verdict(self, value: float, seed: int) -> tuple[str, str | None]:
        """The description of a seed's run, and whether it reproduced the trial (None: nothing to compare)."""
        metric = self.cfg.train.metric
        if not self.replay:
            return f"dhns-search train, seed {seed}: validation {metric} {value:.4f}", None
        expected = self.prov.get("valid_value")
        trial = f"trial {self.prov.get('trial')}"
        if self.runs.replay_of:
            trial = self._link(self.runs.replay_of, trial)
        what = f"Replay of {trial} of study {self.prov.get('study')}, seed {seed}: validation {metric} {value:.6f}"
        same = None
        if isinstance(expected, (int, float)) and seed == self.cfg.seed:
            same = "reproduced exactly" if float(expected) == value else f"differs by {value - float(expected):+.6f}"
            what += f"; the trial had {float(expected):.6f} ({same})"
        return what, same

    def link_trial(self) -> None:
        """The trial's description lists its replays (every one logged so far), each a link to its run."""
        from dhns_search.tracking.tracker import DESCRIPTION_TAG

        if not self.runs.replay_of or self.trial_run is None:
            return
        metric = self.cfg.train.metric
        test_key = f"test_{metric.removesuffix(f'_{rank_policy(metric)}_filtered')}"
        replays = self.tracker.find_runs(self.runs.experiment_id, {"dhns.role": "replay",
                                                                   "dhns.replay_of": self.runs.replay_of})
        lines = []
        for run in replays:
            if "dhns.seed" not in run.tags:
                continue  # a summary run: its seeds are listed
            test = run.metrics.get(test_key)
            cells = [f"validation {run.metrics.get('objective', float('nan')):.4g}"]
            if test is not None:
                cells.append(f"test {test:.4g}")
            if run.tags.get("dhns.reproduction"):
                cells.append(run.tags["dhns.reproduction"])
            lines.append(f"- {self._link(run.run_id, run.name)}: " + ", ".join(cells))
        trial = self.tracker.get_run(self.runs.replay_of)
        text = trial.tags.get(DESCRIPTION_TAG, "").split(_REPLAYS)[0].rstrip()
        run = self.tracker.run(self.runs.replay_of)
        run.describe(f"{text}\n\n{_REPLAYS}\n\n" + "\n".join(lines) + "\n")
        run.set_tags({"dhns.replays": ",".join(r.run_id for r in replays)})

    def _log_summary(self, summary: Any) -> None:
        assert self.runs.summary_run_id is not None
        run = self.tracker.run(self.runs.summary_run_id)
        metric = self.cfg.train.metric
        means = {"objective": summary.mean.get(f"valid/{metric}"), "objective_std": summary.std.get(f"valid/{metric}")}
        for key, value in self._test_metrics({k[5:]: v for k, v in summary.mean.items() if k.startswith("test/")}
                                             ).items():
            means[key] = value
            means[f"{key}_std"] = summary.std.get(f"test/{key[5:]}_{rank_policy(metric)}_filtered")
        run.log_metrics({k: v for k, v in means.items() if v is not None}, step=0)
        run.log_text(json.dumps({"seeds": self.seeds, "mean": summary.mean, "std": summary.std}, indent=1),
                     "summary.json")
        text = f"{self.seeds} seeds from {self.cfg.seed}: validation {metric} {means['objective']:.4f} ± " \
               f"{means['objective_std']:.4f}"
        run.describe(text + (f" (replays of trial {self.prov.get('trial')})" if self.replay else ""))
        run.end("FINISHED")
