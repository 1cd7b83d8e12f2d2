"""``dhns-search run``: options -> :func:`dhns_search.search.runner.run_study`, then the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dhns_search.cli._app import app, cli_errors, console
from dhns_search.cli._format import params_text
from dhns_search.search.options import DEFAULT_N_TRIALS, RunOptions
from dhns_search.search.space.encoding import format_cell

_D = RunOptions()  # option defaults come from the library's RunOptions


@app.command("run")
@cli_errors
def run_command(
    space: Annotated[Path, typer.Option("--space", help="Search space YAML.")] = _D.space,
    study: Annotated[str | None, typer.Option(
        "--study", help="Study name (default: the space file's stem); an existing study is continued.")] = _D.study,
    n_trials: Annotated[int | None, typer.Option(
        "--n-trials", "-n",
        help=f"Trials to run now (default {DEFAULT_N_TRIALS} when --timeout is not given either).")] = _D.n_trials,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Stop starting trials after SECONDS.")] = _D.timeout,
    sampler: Annotated[str, typer.Option(
        "--sampler", help="tpe, random, cmaes, gp, qmc or nsga2 (several objectives: all but cmaes).")] = _D.sampler,
    pruner: Annotated[str | None, typer.Option(
        "--pruner", help="median, hyperband, successive-halving, percentile or none (default median; "
        "a multi-objective study runs without pruning).", show_default=False)] = _D.pruner,
    objective: Annotated[str | None, typer.Option(
        "--objective", help="What to optimise, a comma list: accuracy (mrr, mr, hits@1, hits@3, hits@10, or a "
        "full metric name; maximised, mr minimised) and cost (epoch_seconds, train_seconds, peak_memory_mb; "
        "minimised), e.g. mrr,epoch_seconds. Default: the space's train.metric. Fixed when the study is "
        "created.", show_default=False)] = _D.objectives,
    max_epoch_seconds: Annotated[float | None, typer.Option(
        "--max-epoch-seconds", help="Cap: trials whose mean epoch takes longer are infeasible.",
        show_default=False)] = _D.max_epoch_seconds,
    max_train_seconds: Annotated[float | None, typer.Option(
        "--max-train-seconds", help="Cap on a trial's training wall time (evaluations included).",
        show_default=False)] = _D.max_train_seconds,
    max_memory_mb: Annotated[float | None, typer.Option(
        "--max-memory-mb", help="Cap on a trial's peak memory in MiB (CUDA allocator peak on a GPU, process "
        "RSS on CPU).", show_default=False)] = _D.max_memory_mb,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Optuna storage URL (default sqlite:///studies/studies.db, one file for all studies; "
        "a study in a studies/<study>.db of an earlier version continues there; e.g. "
        "postgresql+psycopg://USER@HOST:5432/DB).")] = _D.storage,
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", help="MLflow tracking URI (artifacts go next to a SQLite file, under artifacts/); "
        "'none' = off.")] = _D.tracking_uri,
    mlflow_metrics: Annotated[str, typer.Option(
        "--mlflow-metrics", help="Validation metrics per trial in MLflow: lean (those of train.metric's rank "
        "policy, short names) or full (every rank policy and direction too).")] = _D.mlflow_metrics,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Study seed (fixed when the study is created; default 0). Trial seeds derive from it.")
    ] = _D.seed,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = _D.device,
    enqueue: Annotated[list[str] | None, typer.Option(
        "--enqueue", help="Warm start: a config YAML, preset:NAME, or a mapping of parameter values "
        "(repeatable).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Dotted override of base + fixed, e.g. train.epochs=5 (repeatable).")] = None,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Show the live table of trials.")] = True,
) -> None:
    """Run (or continue) a hyperparameter study over a search space."""
    from dhns_search.cli.live import LiveTable, quiet_failed_trials
    from dhns_search.search.runner import run_study

    options = RunOptions(space=space, study=study, n_trials=n_trials, timeout=timeout, sampler=sampler,
                         pruner=pruner, storage=storage, tracking_uri=tracking_uri, seed=seed, device=device,
                         enqueue=list(enqueue or []), overrides=list(overrides or []),
                         objectives=objective, max_epoch_seconds=max_epoch_seconds,
                         max_train_seconds=max_train_seconds, max_memory_mb=max_memory_mb,
                         mlflow_metrics=mlflow_metrics)
    with quiet_failed_trials():
        summary = run_study(options, console=console, monitor=LiveTable(console, enabled=live))
    _print_summary(summary, explicit_storage=options.storage is not None)


def _print_summary(summary, *, explicit_storage: bool) -> None:
    """What the run did, its best trial (or Pareto front), and how to export it."""
    counts = ", ".join(f"{v} {k.lower()}" for k, v in summary.states.items() if v)
    console.print(f"study [bold]{summary.study}[/]: {summary.n_trials} trials ({counts}); "
                  f"this run: {len(summary.new_trials)} in {summary.seconds:.1f}s")
    if summary.n_infeasible:
        console.print(f"[magenta]{summary.n_infeasible} completed trials are infeasible[/] (over a cap); they are "
                      "left out of the best trials and of export picks", highlight=False)
    extra = f" --storage '{summary.storage}'" if explicit_storage else ""
    if len(summary.objectives) > 1:
        labels = [s.label for s in summary.objectives]
        if summary.front:
            console.print(f"Pareto front: {len(summary.front)} trials ({', '.join(labels)})", highlight=False)
            for number, values in summary.front:
                mark = "  <- knee" if number == summary.knee_trial else ""
                console.print(f"  trial {number}: " + ", ".join(f"{lab} {format_cell(v, 4)}" for lab, v in
                                                                zip(labels, values)) + mark, highlight=False)
            console.print(f"export it: dhns-search export {summary.study}{extra} --pick knee "
                          f"(or --pick best-{labels[0]}, --pick fastest-within 0.01)", highlight=False, soft_wrap=True)
        else:
            console.print("[yellow]no feasible completed trial yet[/]")
    elif summary.best_trial is not None:
        console.print(f"best: trial {summary.best_trial}, {summary.metric} {summary.best_value:.4f}  "
                      f"{params_text(summary.best_params)}", highlight=False)
        console.print(f"export it: dhns-search export {summary.study}{extra}", highlight=False, soft_wrap=True)
    else:
        console.print("[yellow]no " + ("feasible " if summary.n_infeasible else "") + "completed trial yet[/]")
    console.print(f"storage: {summary.storage}", highlight=False, soft_wrap=True)
    if "artifacts" in summary.plots_skipped:
        console.print(f"[yellow]warning:[/] the study's MLflow artifacts were not all logged: "
                      f"{summary.plots_skipped['artifacts']}", highlight=False)
    if summary.parent_run_id:
        console.print(f"mlflow: experiment {summary.study!r} (id {summary.experiment_id}), parent run "
                      f"{summary.parent_run_id} in {summary.tracking_uri}; see dhns-search ui", highlight=False)
