"""``dhns-search status``: every study, or one study's leaderboard (and Pareto front)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from dhns_search.cli._app import app, cli_errors, console, path_value
from dhns_search.cli._format import params_text, short_names
from dhns_search.search.options import DEFAULT_TOP

if TYPE_CHECKING:
    from dhns_search.search.reports import StudyInfo, StudyReport

#: measurements shown as columns, with their headers
_MEASURED = {"epoch_seconds": "epoch s", "peak_memory_mb": "peak MiB"}


@app.command("status")
@cli_errors
def status_command(
    study: Annotated[str | None, typer.Argument(help="A study name; without it, list the studies.")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Optuna storage URL (default: every studies/*.db).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Trials shown in the leaderboard.")] = DEFAULT_TOP,
    plot: Annotated[Path | None, typer.Option(
        "--plot", parser=path_value, help="Also write a PNG: the Pareto front of a multi-objective study (knee starred, infeasible "
        "trials crossed), the optimisation history of a single-objective one.", show_default=False)] = None,
) -> None:
    """List studies, or show one study's leaderboard (and the Pareto front of a multi-objective study)."""
    from dhns_search.search.reports import list_studies, study_report

    if study is None:
        if plot is not None:
            raise typer.BadParameter("--plot needs a study name", param_hint="--plot")
        _print_studies(list_studies(storage), storage)
        return
    _print_report(study_report(study, storage, top=top))
    if plot is not None:
        from dhns_search.search.plots import write_study_plot
        from dhns_search.search.storage import open_study

        written = write_study_plot(open_study(study, storage)[0], plot)
        console.print(f"plot: {written}", highlight=False)


def _print_studies(infos: list[StudyInfo], storage: str | None) -> None:
    if not infos:
        console.print("no studies found" + (f" in {storage}" if storage else " in studies/*.db"))
        return
    table = Table(title="studies", title_justify="left")
    table.add_column("study", no_wrap=True)
    table.add_column("trials", justify="right")
    table.add_column("states", overflow="fold")
    table.add_column("best", justify="right", no_wrap=True)
    table.add_column("storage", overflow="fold")
    for s in infos:
        states = ", ".join(f"{v} {k.lower()}" for k, v in s.states.items() if v) or "-"
        best = "-" if s.best_value is None else f"{s.best_value:.4f} (#{s.best_trial})"
        if s.front_size is not None:
            best = (f"{len(s.objectives)} objectives: front {s.front_size}"
                    + (f", knee #{s.knee_trial}" if s.knee_trial is not None else ""))
        table.add_row(s.name, str(s.n_trials), states, best, s.storage)
    console.print(table)


def _print_report(report: StudyReport) -> None:
    counts = ", ".join(f"{v} {k.lower()}" for k, v in report.states.items() if v) or "no trials"
    console.print(f"study [bold]{report.name}[/] ({report.storage}): {counts}", highlight=False)
    console.print(f"space {report.space}, seed {report.seed}, metric {report.metric}", highlight=False)
    if report.budget is not None:
        console.print(f"budget: {report.used} of {report.budget} trials (--n-trials)", highlight=False)
    if report.cost is not None:
        console.print(_cost_line(report), highlight=False)
    for number, worker in report.dead:
        console.print(f"[yellow]trial {number} is RUNNING but its worker ({worker}) is gone[/]: the next run or worker "
                      "on this machine retries it from its checkpoint", highlight=False)
    if report.multi:
        console.print("objectives: " + ", ".join(f"{o.label} ({o.arrow})" for o in report.objectives)
                      + "; no pruning (multi-objective)", highlight=False)
    if report.caps:
        caps = ", ".join(f"{k} <= {v:g}" for k, v in report.caps.items())
        console.print(f"caps: {caps}; {report.n_feasible} feasible, {report.n_infeasible} infeasible completed "
                      "trials", highlight=False)
    if report.multi:
        _print_front(report)
    elif report.rows:
        _print_leaderboard(report)
    else:
        console.print("[yellow]no " + ("feasible " if report.n_infeasible else "") + "completed trial yet[/]")
    for number, value, why in report.infeasible:
        console.print(f"[magenta]infeasible[/] trial {number}: {report.metric} {value:.4f}; {why} "
                      "(excluded from the best trials and from export)", highlight=False)
    if report.n_infeasible > len(report.infeasible):
        console.print(f"... and {report.n_infeasible - len(report.infeasible)} more infeasible trials",
                      highlight=False)
    for number, reason in report.failures:
        console.print(f"[red]failed[/] trial {number}: {reason}", highlight=False)


def _cost_line(report: StudyReport) -> str:
    cost = report.cost
    line = f"spent: {cost.cpu_hours:.3g} CPU-hours"
    if report.cpu_budget is not None:
        line += f" of {report.cpu_budget:g} (--cpu-hours)"
    line += f", {cost.wall_seconds / 3600:.3g} trial-hours"
    if cost.untimed:
        line += f" ({cost.untimed} finished trial(s) without a CPU time)"
    if cost.disk_bytes is not None:
        line += f"; trial folders {cost.disk_bytes / 2**20:.1f} MiB on this machine ({cost.checkpoints} checkpoint(s))"
    return line


def _print_leaderboard(report: StudyReport) -> None:
    """The best trials of a single-objective study."""
    from dhns_search.search.queries import param_names

    short = short_names(param_names(report.rows))
    title = f"best {len(report.rows)} trials by validation {report.metric}" + (" (feasible)" if report.caps else "")
    table = Table(title=title, title_justify="left")
    for col in ("rank", "trial", "value", "epoch", "seconds"):
        table.add_column(col, justify="right", no_wrap=True)
    measured = [m for m in _MEASURED if any(m in r.measures for r in report.rows)]
    for m in measured:
        table.add_column(_MEASURED[m], justify="right", no_wrap=True)
    table.add_column("parameters", ratio=1, min_width=24)
    for r in report.rows:
        table.add_row(str(r.rank), str(r.number), f"{r.value:.4f}", str(r.best_epoch),
                      "-" if r.seconds is None else f"{r.seconds:.1f}",
                      *(f"{r.measures[m]:.4g}" if m in r.measures else "-" for m in measured),
                      params_text(r.params, short))
    console.print(table)


def _print_front(report: StudyReport) -> None:
    """The Pareto front of a multi-objective study (knee and best-<objective> marked)."""
    from dhns_search.search.queries import param_names

    if not report.front:
        console.print("[yellow]no feasible completed trial yet: the Pareto front is empty[/]")
        return
    short = short_names(param_names(report.front))
    table = Table(title=f"Pareto front: {len(report.front)} of {report.n_feasible} feasible completed trials",
                  title_justify="left")
    table.add_column("trial", justify="right", no_wrap=True)
    for o in report.objectives:
        table.add_column(f"{o.label} ({o.arrow})", justify="right", overflow="fold")
    measured = [m for m in _MEASURED
                if m not in {o.name for o in report.objectives} and any(m in r.measures for r in report.front)]
    for m in measured:
        table.add_column(_MEASURED[m], justify="right", no_wrap=True)
    table.add_column("pick", overflow="fold")
    table.add_column("parameters", ratio=1, min_width=24)
    for r in report.front:
        cells = [str(r.number), *(f"{r.values[o.name]:.4g}" for o in report.objectives),
                 *(f"{r.measures[m]:.4g}" if m in r.measures else "-" for m in measured)]
        pick = Text(", ".join(r.picks), style="bold" if "knee" in r.picks else "")
        table.add_row(*cells, pick, params_text(r.params, short))
    console.print(table)
    console.print("export one: dhns-search export " + report.name + " --pick knee | best-"
                  + report.objectives[0].label + " | fastest-within D", highlight=False, soft_wrap=True)
