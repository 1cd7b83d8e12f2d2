"""``compare --tracking-uri``: a comparison in MLflow, logged from its run folders through the tracking
interface (:class:`dhns_search.tracking.Tracker`; this module imports no mlflow).

Layout (experiment ``compare-<name>``, a model-training experiment with the ablation's description)::

    parent run "<name>"            tags dhns.role=comparison, dhns.comparison_out=<output folder>
        description: the final-metrics and paired-difference tables; artifacts: comparison.md,
        summary.json, curves.png; metrics: <arm>.diff_<metric> (mean paired difference, final test)
    child runs "<arm>-seed<s>"     tags dhns.arm, dhns.seed; params: the arm's overrides first, then the
        rest of the configuration as zconfig.*; metrics per evaluation epoch: valid_* and test_* of the
        rank policy of train.metric, train losses, epoch_seconds; final_valid_*, final_test_*, best_epoch;
        the dataset as an input; artifact config.yaml

Every child is logged once, when its run has finished (found again by its tags, so a resumed comparison
neither duplicates nor loses runs); the parent is found again by its output folder and ends FINISHED once
every run is done, KILLED while some are missing.
"""

from __future__ import annotations

import re
from typing import Any

from dhns_search.ablation.report import Summary, markdown, metric_label
from dhns_search.ablation.runner import Comparison, RunRecord
from dhns_search.training.loop import CONFIG_FILE

__all__ = ["ComparisonTracker"]

_LOSSES = ("train_loss", "kgc_loss", "ha_loss", "diffusion_loss", "epoch_seconds", "eval_seconds")


class ComparisonTracker:
    """Logs a :class:`~dhns_search.ablation.runner.Comparison` to the tracking store at ``uri`` (through
    :class:`dhns_search.tracking.Tracker`)."""

    def __init__(self, uri: str, comparison: Comparison) -> None:
        from dhns_search.tracking.tracker import Tracker

        self.comparison = comparison
        self.tracker = Tracker(uri)
        self.experiment = self.tracker.experiment(f"compare-{comparison.name}",
                                                  description=comparison.spec.description,
                                                  tags={"dhns.comparison": comparison.name})
        self.parent = self._parent()
        self._datasets: dict[str, Any] = {}

    def _parent(self) -> str:
        out = str(self.comparison.out.resolve())
        found = self.tracker.find_runs(self.experiment, {"dhns.role": "comparison", "dhns.comparison_out": out})
        if found:
            self.tracker.run(found[-1].run_id).mark_running()
            return found[-1].run_id
        return self.tracker.start_run(self.experiment, self.comparison.name, device=None,
                                      tags={"dhns.role": "comparison", "dhns.comparison_out": out,
                                            "dhns.reference": self.comparison.spec.reference,
                                            "dhns.seeds": ",".join(map(str, self.comparison.seeds))}).run_id

    def _dataset(self, arm: str) -> Any:
        from dhns_search.data import load_from_config
        from dhns_search.tracking.provenance import dataset_summary

        data = self.comparison.configs[arm].data
        key = data.model_dump_json()
        if key not in self._datasets:
            self._datasets[key] = dataset_summary(load_from_config(data))
        return self._datasets[key]

    def log_run(self, record: RunRecord) -> None:
        """Log a finished arm-seed run as a child of the comparison (once)."""
        from dhns_search.config.flat import flatten_config
        from dhns_search.tracking.metrics import rank_policy
        from dhns_search.tracking.tracker import ordered_params, searched_params

        if not record.done or self.tracker.find_runs(self.experiment, {
                "mlflow.parentRunId": self.parent, "dhns.arm": record.arm, "dhns.seed": record.seed}, limit=1):
            return
        cfg = self.comparison.configs[record.arm].model_copy(update={"seed": record.seed})
        run = self.tracker.start_run(self.experiment, f"{record.arm}-seed{record.seed}", parent=self.parent,
                                     dataset=self._dataset(record.arm),
                                     device=str(record.result.get("device", cfg.device)),
                                     tags={"dhns.arm": record.arm, "dhns.seed": str(record.seed), "dhns.role": "arm"},
                                     description=self.comparison.spec.arms[record.arm].description)
        overrides = {**self.comparison.spec.set, **self.comparison.spec.arms[record.arm].set}
        run.log_params(ordered_params(searched_params(overrides), flatten_config(cfg)))
        policy = rank_policy(cfg.train.metric)
        short = {m: m.removesuffix(f"_{policy}_filtered") for m in _rank_metrics(record, policy)}
        for row in record.history:
            step = int(row["epoch"])
            values = {k: row[k] for k in _LOSSES if k in row}
            for split in ("valid", "test"):
                values.update({f"{split}_{s}": row[split][m] for m, s in short.items() if split in row})
            run.log_metrics(values, step)
        final = {"best_epoch": record.result["best_epoch"]}
        for split in ("valid", "test"):
            if record.result.get(split):
                final.update({f"final_{split}_{s}": record.result[split][m] for m, s in short.items()})
        run.log_metrics(final, int(record.result["epochs_run"]))
        run.log_file(record.path / CONFIG_FILE)
        run.end("FINISHED")

    def finish(self, summary: Summary) -> None:
        """Log every finished run not logged yet, then the reports and the tables to the parent."""
        for record in self.comparison.runs.values():
            self.log_run(record)
        parent = self.tracker.run(self.parent)
        out = self.comparison.out
        for name in ("comparison.md", "summary.json", "curves.png"):
            if (out / name).is_file():
                parent.log_file(out / name)
        text = markdown(summary)
        tables = text[text.index("## Final metrics"):] if "## Final metrics" in text else text
        cut = tables.find("\n## Validation")
        parent.describe((tables if cut < 0 else tables[:cut])[:5000])
        diffs = {f"{arm}.diff_test_{metric_label(m, summary.metrics)}": d[f"final/test/{m}"].mean
                 for arm, d in summary.differences.items() for m in summary.metrics}
        parent.log_metrics({re.sub(r"[(),]", "", k.replace("@", "_at_")): v for k, v in diffs.items()}, 0)
        done = all(r.done for r in self.comparison.runs.values())
        parent.end("FINISHED" if done else "KILLED")


def _rank_metrics(record: RunRecord, policy: str) -> list[str]:
    """The metrics of the rank policy that the run recorded (MRR, MR, Hits@k, both directions)."""
    source = record.result.get("valid") or {}
    return [m for m in source if m.endswith(f"_{policy}_filtered") and not m.startswith(("head_", "tail_"))]
