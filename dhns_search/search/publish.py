"""What a study's MLflow parent run receives (the bridge itself is :mod:`.tracking`).

- after every trial (:func:`publish_progress`): metrics ``n_complete``, ``n_pruned``, ``n_fail``,
  ``best_value`` (and ``n_infeasible`` with caps, ``pareto_size`` with several objectives), step = the
  trial number, and the run's description: the leaderboard so far (:func:`study_description`);
- when the run ends (:func:`publish_results`): ``leaderboard.csv``, ``leaderboard.md``,
  ``best_config.yaml`` (the export of the best trial; a multi-objective study's knee), the tags
  ``dhns.best_value``, ``dhns.best_trial`` (``dhns.knee_trial``, ``dhns.pareto_trials``), the
  description and the plots (PNGs and ``plots/interactive.html``, every interactive plot on one page), then
  the description again, now with a link that opens that page on the run's *Artifacts* tab (kept by
  every later update: the tag ``dhns.plots`` names the page), and the parent is ended.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from dhns_search.search.export import config_text, trial_config
from dhns_search.search.objectives import ObjectiveSpec, primary_index, study_objectives
from dhns_search.search.plots import INTERACTIVE_PAGE, write_plots
from dhns_search.search.queries import (
    LeaderRow,
    best_trial,
    completed,
    infeasible,
    leaderboard,
    param_names,
    pareto_front,
    primary_value,
    state_counts,
)
from dhns_search.search.space.encoding import format_cell
from dhns_search.tracking.metrics import objective_title
from dhns_search.tracking.study import MlflowBridge

__all__ = ["leaderboard_csv", "leaderboard_markdown", "publish_progress", "publish_results", "study_description"]

#: rows of the leaderboard in the parent run's description (leaderboard.csv has them all), fewer when
#: they would not fit the characters of an MLflow tag
DESCRIPTION_ROWS = 20
DESCRIPTION_CHARS = 7500


# ------------------------------------------------------------------------------ leaderboard files
def _value_columns(rows: list[LeaderRow]) -> list[str]:
    """The objectives (when there are several) and the measurements present in any row."""
    names: list[str] = []
    for r in rows:
        if len(r.values) > 1:
            names += [k for k in r.values if k not in names]
    for r in rows:
        names += [k for k in r.measures if k not in names]
    return names


def _number(row: LeaderRow, name: str) -> float | None:
    value = row.values.get(name) if len(row.values) > 1 and name in row.values else row.measures.get(name)
    return None if value is None else float(value)


def leaderboard_csv(rows: list[LeaderRow]) -> str:
    names = param_names(rows)
    extra = _value_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "trial", "value", "best_epoch", "seed", "seconds", *extra, *names])
    for r in rows:
        writer.writerow([r.rank, r.number, repr(r.value), r.best_epoch, r.seed,
                         "" if r.seconds is None else f"{r.seconds:.1f}",
                         *("" if (v := _number(r, n)) is None else repr(v) for n in extra),
                         *("" if n not in r.params else format_cell(r.params[n], 6) for n in names)])
    return buf.getvalue()


def leaderboard_markdown(rows: list[LeaderRow], *, metric: str = "value") -> str:
    names = param_names(rows)
    extra = _value_columns(rows)
    head = ["rank", "trial", metric, "best epoch", "seconds", *extra, *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r.rank), str(r.number), f"{r.value:.4f}", str(r.best_epoch),
                 "" if r.seconds is None else f"{r.seconds:.1f}",
                 *("" if (v := _number(r, n)) is None else f"{v:.4g}" for n in extra),
                 *("" if n not in r.params else format_cell(r.params[n], 6) for n in names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def study_description(study: optuna.Study, *, top: int = DESCRIPTION_ROWS, limit: int = DESCRIPTION_CHARS,
                      plots: str | None = None) -> str:
    """The parent run's description (markdown): what the study optimises, its trial counts, a link to the
    interactive plots (``plots``: the link, None: none yet), and the leaderboard of its best ``top``
    feasible completed trials (fewer if ``limit`` characters cannot hold them)."""
    text = _description(study, top, plots)
    while len(text) > limit and top > 1:
        top //= 2
        text = _description(study, top, plots)
    return text if len(text) <= limit else text[: limit - 40] + "\n\n(cut: see leaderboard.md)\n"


def _description(study: optuna.Study, top: int, plots: str | None = None) -> str:
    specs = study_objectives(study)
    primary = specs[primary_index(specs)]
    counts = state_counts(study)
    total = len(study.get_trials(deepcopy=False))
    running = f", {counts['RUNNING']} running" if counts.get("RUNNING") else ""
    aims = ", ".join(f"{objective_title(s)} ({s.arrow})" for s in specs)
    head = (f"**Study {study.study_name}**: {aims}. {total} trials: {counts['COMPLETE']} complete, "
            f"{counts['PRUNED']} pruned, {counts['FAIL']} failed{running}.")
    if plots:  # in the first paragraph: the page folds the description below it
        head += f" **Plots**: [every interactive plot on one page]({plots}) (`plots/{INTERACTIVE_PAGE}`; PNGs in `plots/`)."
    lines = [head, ""]
    rows = leaderboard(study, top=top)
    if not rows:
        return "\n".join([*lines, "No completed trial yet."]) + "\n"
    shown = len(completed(study))
    lines.append(f"Best {len(rows)} of {shown} completed trials" + ("" if len(rows) == shown else
                                                                     " (all of them: leaderboard.csv)") + ":")
    lines.append("")
    return "\n".join(lines) + "\n" + leaderboard_markdown(rows, metric=primary.label)


# ----------------------------------------------------------------------------- during the run
def publish_progress(bridge: MlflowBridge, study: optuna.Study, specs: Sequence[ObjectiveSpec],
                     caps: Mapping[str, float], step: int) -> None:
    """The study's counts and best value so far, as parent metrics at ``step`` (a trial number)."""
    best = best_trial(study)
    metrics: dict[str, Any] = {f"n_{k.lower()}": v for k, v in state_counts(study).items()
                               if k in ("COMPLETE", "PRUNED", "FAIL")}
    if caps:
        metrics["n_infeasible"] = len(infeasible(study))
    if best:
        metrics["best_value"] = primary_value(best, specs)
    if len(specs) > 1:
        metrics["pareto_size"] = len(pareto_front(study).trials)
    bridge.log_parent_metrics(metrics, step=step)
    bridge.set_parent_description(study_description(study, plots=bridge.plots_link()))


# ------------------------------------------------------------------------------- at the end
def publish_results(study: optuna.Study, bridge: MlflowBridge | None, status: str, *, end: bool | None = None
                    ) -> tuple[list[str], dict[str, str]]:
    """Leaderboard, best config and plots onto the parent run, then end it (``status``; ``end=False``
    leaves it running, None: unless another trial runs); returns the plot files logged and the plots
    (or ``"artifacts"``) skipped with the reason.

    Nothing here may hide the study's own outcome: a failure to log an artifact is reported in the
    returned ``skipped`` mapping, and the parent run is ended in any case.
    """
    if bridge is None:
        return [], {}
    files: list[str] = []
    skipped: dict[str, str] = {}
    try:
        _publish_leaderboard(study, bridge)
        files, skipped = _publish_plots(study, bridge)
    except Exception as err:  # noqa: BLE001 - report, and still end the parent below
        skipped["artifacts"] = f"{type(err).__name__}: {err}"
    finally:
        if end is None:  # decide here: another worker still running trials of this study ends the parent
            end = status != "FINISHED" or not any(
                t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))
        if end:
            bridge.end_study(status)
    return files, skipped


def _publish_leaderboard(study: optuna.Study, bridge: MlflowBridge) -> None:
    """``leaderboard.csv``, ``leaderboard.md``, ``best_config.yaml`` and the best-trial tags."""
    specs = study_objectives(study)
    rows = leaderboard(study)
    bridge.log_parent_text(leaderboard_csv(rows), "leaderboard.csv")
    label = specs[primary_index(specs)].name if len(specs) > 1 else study.user_attrs.get("dhns.metric", "value")
    bridge.log_parent_text(leaderboard_markdown(rows, metric=label), "leaderboard.md")
    best = best_trial(study)
    tags: dict[str, Any] = {"dhns.n_trials": len(study.get_trials(deepcopy=False))}
    if best:
        tags.update({"dhns.best_value": repr(primary_value(best, specs)), "dhns.best_trial": best.number})
        if len(specs) > 1:
            front = pareto_front(study)
            knee = front.knee_trial
            assert knee is not None
            bridge.log_parent_text(config_text(trial_config(study, knee, pick="knee")), "best_config.yaml")
            tags.update({"dhns.knee_trial": knee.number,
                         "dhns.pareto_trials": ",".join(str(t.number) for t in front.trials)})
        else:
            bridge.log_parent_text(config_text(trial_config(study, best)), "best_config.yaml")
    bridge.set_parent_tags(tags)
    bridge.set_parent_description(study_description(study, plots=bridge.plots_link()))


def _publish_plots(study: optuna.Study, bridge: MlflowBridge) -> tuple[list[str], dict[str, str]]:
    """The plots under ``plots/``; the description then links to the interactive page."""
    tmp = Path(tempfile.mkdtemp(prefix="dhns-plots-"))
    try:
        result = write_plots(study, tmp)
        bridge.log_parent_files(result.files, "plots")
        logged = [f"plots/{p.name}" for p in result.files]
        page = f"plots/{INTERACTIVE_PAGE}"
        if page in logged:
            bridge.plots_published(page)
            bridge.set_parent_description(study_description(study, plots=bridge.plots_link()))
        return logged, result.skipped
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
