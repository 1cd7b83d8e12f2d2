"""``compare --tracking-uri``: a comparison in MLflow, logged from its run folders.

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

from typing import Any

from dhns_search.ablation.report import Summary, markdown, metric_label
from dhns_search.ablation.runner import Comparison, RunRecord

__all__ = ["ComparisonTracker"]

_LOSSES = ("train_loss", "kgc_loss", "ha_loss", "diffusion_loss", "epoch_seconds", "eval_seconds")


class ComparisonTracker:
    """Logs a :class:`~dhns_search.ablation.runner.Comparison` to the MLflow store at ``uri``."""

    def __init__(self, uri: str, comparison: Comparison) -> None:
        from dhns_search.search.tracking import artifact_root_for, make_client, open_experiment

        self.comparison = comparison
        self.client = make_client(uri)
        name = f"compare-{comparison.name}"
        self.experiment = open_experiment(
            self.client, name, artifact_location=(artifact_root_for(uri) / name).as_uri(),
            description=comparison.spec.description, tags={"dhns.comparison": comparison.name})
        self.parent = self._parent()
        self._datasets: dict[str, Any] = {}

    def _find(self, tags: dict[str, str]) -> list:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        return self.client.search_runs([self.experiment], filter_string=query, max_results=1000)

    def _parent(self) -> str:
        from dhns_search.search.tracking import start_run

        out = str(self.comparison.out.resolve())
        found = self._find({"dhns.role": "comparison", "dhns.comparison_out": out})
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        return start_run(self.client, self.experiment, self.comparison.name, device=None,
                         tags={"dhns.role": "comparison", "dhns.comparison_out": out,
                               "dhns.reference": self.comparison.spec.reference,
                               "dhns.seeds": ",".join(map(str, self.comparison.seeds))})

    def _dataset(self, arm: str) -> Any:
        from dhns_search.data import load_from_config
        from dhns_search.search.provenance import dataset_summary

        data = self.comparison.configs[arm].data
        key = data.model_dump_json()
        if key not in self._datasets:
            self._datasets[key] = dataset_summary(load_from_config(data))
        return self._datasets[key]

    def log_run(self, record: RunRecord) -> None:
        """Log a finished arm-seed run as a child of the comparison (once)."""
        from dhns_search.search.run_metrics import rank_policy
        from dhns_search.search.space.encoding import flatten_config
        from dhns_search.search.tracking import log_metrics, log_params, ordered_params, start_run

        if not record.done or self._find({"mlflow.parentRunId": self.parent, "dhns.arm": record.arm,
                                          "dhns.seed": str(record.seed)}):
            return
        cfg = self.comparison.configs[record.arm].model_copy(update={"seed": record.seed})
        run_id = start_run(self.client, self.experiment, f"{record.arm}-seed{record.seed}",
                           parent_run_id=self.parent, dataset=self._dataset(record.arm),
                           device=str(record.result.get("device", cfg.device)),
                           tags={"dhns.arm": record.arm, "dhns.seed": str(record.seed), "dhns.role": "arm"},
                           description=self.comparison.spec.arms[record.arm].description)
        overrides = {**self.comparison.spec.set, **self.comparison.spec.arms[record.arm].set}
        log_params(self.client, run_id, ordered_params({k: str(v) for k, v in overrides.items()},
                                                       flatten_config(cfg)))
        policy = rank_policy(cfg.train.metric)
        short = {m: m.removesuffix(f"_{policy}_filtered") for m in _rank_metrics(record, policy)}
        for row in record.history:
            step = int(row["epoch"])
            values = {k: row[k] for k in _LOSSES if k in row}
            for split in ("valid", "test"):
                values.update({f"{split}_{s}": row[split][m] for m, s in short.items() if split in row})
            log_metrics(self.client, run_id, values, step)
        final = {"best_epoch": record.result["best_epoch"]}
        for split in ("valid", "test"):
            if record.result.get(split):
                final.update({f"final_{split}_{s}": record.result[split][m] for m, s in short.items()})
        log_metrics(self.client, run_id, final, int(record.result["epochs_run"]))
        self.client.log_artifact(run_id, str(record.path / "config.yaml"))
        self.client.set_terminated(run_id, "FINISHED")

    def finish(self, summary: Summary) -> None:
        """Log every finished run not logged yet, then the reports and the tables to the parent."""
        from dhns_search.search.tracking import DESCRIPTION_TAG, log_metrics

        for record in self.comparison.runs.values():
            self.log_run(record)
        out = self.comparison.out
        for name in ("comparison.md", "summary.json", "curves.png"):
            if (out / name).is_file():
                self.client.log_artifact(self.parent, str(out / name))
        text = markdown(summary)
        tables = text[text.index("## Final metrics"):] if "## Final metrics" in text else text
        cut = tables.find("\n## Validation")
        self.client.set_tag(self.parent, DESCRIPTION_TAG, (tables if cut < 0 else tables[:cut])[:5000])
        diffs = {f"{arm}.diff_test_{metric_label(m)}": d[f"final/test/{m}"].mean
                 for arm, d in summary.differences.items() for m in summary.metrics}
        log_metrics(self.client, self.parent, {k.replace("@", "_at_"): v for k, v in diffs.items()}, 0)
        done = all(r.done for r in self.comparison.runs.values())
        self.client.set_terminated(self.parent, "FINISHED" if done else "KILLED")


def _rank_metrics(record: RunRecord, policy: str) -> list[str]:
    """The metrics of the rank policy that the run recorded (MRR, MR, Hits@k, both directions)."""
    source = record.result.get("valid") or {}
    return [m for m in source if m.endswith(f"_{policy}_filtered") and not m.startswith(("head_", "tail_"))]
