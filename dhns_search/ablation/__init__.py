"""Paired ablations: train named arms over the same seeds and compare them with confidence intervals.

``dhns-search compare FILE`` is :func:`run_ablation`.  The ablation file (:mod:`.spec`) names arms as
overrides of one base configuration (a preset, a config or export file, or the best trial of a study);
:mod:`.runner` trains every arm with every seed, resumably; :mod:`.stats` and :mod:`.report` turn the run
folders into means over seeds, paired differences with 95% intervals, a Markdown table and a plot;
:mod:`.tracking` logs the comparison to MLflow (one parent run, one child per arm and seed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from dhns_search.ablation.report import Summary, summarize, write_reports
from dhns_search.ablation.runner import Comparison, RunRecord, prepare, run_comparison
from dhns_search.ablation.spec import AblationSpec, ArmSpec, arm_config, load_ablation
from dhns_search.ablation.stats import Difference, Spread, paired_difference, spread

__all__ = [
    "AblationSpec",
    "ArmSpec",
    "Comparison",
    "Difference",
    "RunRecord",
    "Spread",
    "Summary",
    "arm_config",
    "load_ablation",
    "paired_difference",
    "prepare",
    "run_ablation",
    "run_comparison",
    "spread",
    "summarize",
    "write_reports",
]

#: where ``compare`` writes when no ``--out`` is given: ``comparisons/<ablation file stem>``
DEFAULT_ROOT = Path("comparisons")


def run_ablation(
    path: str | Path,
    *,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    seeds: int | None = None,
    arms: list[str] | None = None,
    progress: bool = True,
    tracking_uri: str | None = None,
    command: str | None = None,
    stop: threading.Event | None = None,
    on_start: Callable[[RunRecord, bool], None] | None = None,
    on_busy: Callable[[RunRecord], None] | None = None,
) -> Summary:
    """Run (or continue) the ablation in ``path`` and write its reports; return the summary.

    ``seeds`` replaces the file's seeds by ``0..seeds-1``; ``arms`` runs a subset (the reference is always
    included).  Reports are rewritten after every run, so an interrupted comparison leaves partial tables;
    they are made from every run folder as it is then, so several processes running the same comparison
    (:func:`~dhns_search.ablation.runner.run_comparison`; ``on_busy`` is told of each run another one holds)
    write the same reports.
    """
    path = Path(path)
    spec = load_ablation(path)
    name = path.stem
    comparison = prepare(spec, out if out is not None else DEFAULT_ROOT / name, name=name, overrides=overrides,
                         origin=path.parent, arms=arms, seeds=None if seeds is None else list(range(seeds)))
    tracker = None
    if tracking_uri is not None:
        from dhns_search.ablation.tracking import ComparisonTracker

        tracker = ComparisonTracker(tracking_uri, comparison)

    def refreshed(comp: Comparison) -> Comparison:
        for other in comp.runs.values():  # runs that other processes finished meanwhile
            other.refresh()
        return comp

    def on_end(comp: Comparison, record: RunRecord) -> None:
        write_reports(refreshed(comp), command=command)
        if tracker is not None:
            tracker.log_run(record)

    try:
        run_comparison(comparison, progress=progress, stop=stop, on_start=on_start, on_end=on_end, on_busy=on_busy)
    finally:
        summary = write_reports(refreshed(comparison), command=command)
        if tracker is not None:
            tracker.finish(summary)
    return summary
