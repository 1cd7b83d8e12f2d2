"""``dhns-search run``: options -> :func:`dhns_search.search.runner.run_study`, then the summary."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dhns_search.cli._app import app, cli_errors, console, err_console, path_value
from dhns_search.cli._format import params_text
from dhns_search.search.options import DEFAULT_N_TRIALS, RunOptions
from dhns_search.search.space.encoding import format_cell

_D = RunOptions()  # option defaults come from the library's RunOptions
N_TRIALS_HELP = (
    "The study's budget: its trials across all workers and runs, counting COMPLETE, PRUNED, FAIL and RUNNING "
    "trials (a failed trial that is retried from its checkpoint counts once); the run stops when the study "
    f"has that many, so the same command continues an interrupted study. Default: the study's own, "
    f"{DEFAULT_N_TRIALS} for a new study (unless --timeout or --cpu-hours is given).")
CPU_HOURS_HELP = (
    "The study's CPU budget: no trial starts once its finished trials have spent this many CPU-hours (every "
    "thread of each trial's process; recorded on the study, so the same command continues to it; with "
    "--n-trials too, the first one met ends the run).")


@app.command("run")
@cli_errors
def run_command(
    space: Annotated[Path, typer.Option("--space", help="Search space YAML.", parser=path_value)] = _D.space,
    study: Annotated[str | None, typer.Option(
        "--study", help="Study name (default: the space file's stem); an existing study is continued.")] = _D.study,
    n_trials: Annotated[int | None, typer.Option(
        "--n-trials", "-n", help=N_TRIALS_HELP)] = _D.n_trials,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Stop starting trials after SECONDS (each worker).")] = _D.timeout,
    cpu_hours: Annotated[float | None, typer.Option(
        "--cpu-hours", help=CPU_HOURS_HELP, show_default=False)] = _D.cpu_hours,
    sampler: Annotated[str, typer.Option(
        "--sampler", help="tpe, random, cmaes, gp, qmc or nsga2 (several objectives: all but cmaes).")] = _D.sampler,
    pruner: Annotated[str | None, typer.Option(
        "--pruner", help="median, hyperband, successive-halving, percentile or none (default median; "
        "a multi-objective study runs without pruning).", show_default=False)] = _D.pruner,
    pruner_startup: Annotated[int | None, typer.Option(
        "--pruner-startup", help="Completed trials before the median or percentile pruner prunes (default 5); "
        "a study that starts from good --enqueue trials can prune from the first one after them.",
        show_default=False)] = _D.pruner_startup,
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
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = _D.device,
    workers: Annotated[int, typer.Option(
        "--workers", "-w", help="Worker processes on this machine, all on this study (default: one per --devices "
        "slot, else 1). Several need a journal, Redis or PostgreSQL --storage (default "
        "journal:studies/<study>.journal); the cores are divided between them.")] = _D.workers,
    devices: Annotated[str | None, typer.Option(
        "--devices", help="One worker per device, e.g. cpu,cuda:0,cuda:1; cuda:0*2 puts two workers on cuda:0. "
        "The device is recorded on every trial and run.", show_default=False)] = _D.devices,
    max_trials_per_worker: Annotated[int | None, typer.Option(
        "--max-trials-per-worker", help="Trials of each worker process at most (--n-trials is the study's "
        "total).", show_default=False)] = _D.max_trials_per_worker,
    work_dir: Annotated[Path, typer.Option(
        "--work-dir", parser=path_value, help="Where trials checkpoint (a folder per study and trial); the retry of a trial whose "
        "worker died continues from there. Several machines: a shared filesystem path.")] = _D.work_dir,
    enqueue: Annotated[list[str] | None, typer.Option(
        "--enqueue", help="Warm start: a config YAML, preset:NAME, or a mapping of parameter values "
        "(repeatable).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Dotted override of base + fixed, e.g. train.epochs=5 (repeatable).")] = None,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Show the live table of trials.")] = True,
) -> None:
    """Run (or continue) a hyperparameter study over a search space, with one or several workers.

    Ctrl-C or SIGTERM ends the trial in progress at its next batch (checkpointed, queued again) and prints
    the command that continues the study; a second one stops at once.
    """
    options = RunOptions(space=space, study=study, n_trials=n_trials, timeout=timeout, cpu_hours=cpu_hours,
                         sampler=sampler, pruner_startup=pruner_startup,
                         pruner=pruner, storage=storage, tracking_uri=tracking_uri, seed=seed, device=device,
                         enqueue=list(enqueue or []), overrides=list(overrides or []),
                         objectives=objective, max_epoch_seconds=max_epoch_seconds,
                         max_train_seconds=max_train_seconds, max_memory_mb=max_memory_mb,
                         mlflow_metrics=mlflow_metrics, workers=workers, devices=devices,
                         max_trials_per_worker=max_trials_per_worker, work_dir=work_dir)
    run_and_report(options, live=live, study_name=study or space.stem)


@app.command("worker")
@cli_errors
def worker_command(
    study: Annotated[str, typer.Option("--study", help="The study to join.", show_default=False)],
    storage: Annotated[str, typer.Option(
        "--storage", help="Its storage URL, e.g. postgresql+psycopg://USER@HOST:5432/DB.", show_default=False)],
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", help="MLflow tracking URI, e.g. http://HOST:5000; 'none' = off.")] = _D.tracking_uri,
    n_trials: Annotated[int | None, typer.Option(
        "--n-trials", "-n", help="Change the study's budget (default: the one its run set).",
        show_default=False)] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Stop starting trials after SECONDS.")] = None,
    cpu_hours: Annotated[float | None, typer.Option(
        "--cpu-hours", help="Change the study's CPU budget (default: the one its run set).",
        show_default=False)] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes on this machine.")] = 1,
    devices: Annotated[str | None, typer.Option(
        "--devices", help="One worker per device (as for run).", show_default=False)] = None,
    max_trials_per_worker: Annotated[int | None, typer.Option(
        "--max-trials-per-worker", help="Trials of each worker process at most.", show_default=False)] = None,
    work_dir: Annotated[Path, typer.Option(
        "--work-dir", parser=path_value, help="Where trials checkpoint (a shared filesystem path, the same for every machine, "
        "so that a retry finds the checkpoint of a trial whose machine died).")] = _D.work_dir,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="torch threads of this worker (default: torch's).", show_default=False)] = None,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Show the live table of trials.")] = True,
    spawned: Annotated[bool, typer.Option("--spawned", hidden=True)] = False,  # started by run --workers
) -> None:
    """Join a study from this machine (the multi-machine mode): run its trials until its budget is met.

    What to run (space file, --set overrides, sampler, pruner) comes from the study, as its dhns-search run
    recorded it; start the worker from a checkout that has the space file at the same path.
    """
    options = RunOptions(study=study, storage=storage, tracking_uri=tracking_uri, n_trials=n_trials, timeout=timeout,
                         cpu_hours=cpu_hours,
                         device=device, workers=workers, devices=devices, max_trials_per_worker=max_trials_per_worker,
                         work_dir=work_dir, threads=threads, join=True)
    run_and_report(options, live=live, study_name=study, report=not spawned)


def run_and_report(options: RunOptions, *, live: bool, study_name: str, report: bool = True) -> None:
    """Run the study in this process or in worker processes; the summary, or the line that continues it
    (``report=False``, a worker that ``run --workers`` started: neither, its ``run`` says it)."""
    from dataclasses import replace

    from dhns_search.cli._signals import exit_code, stop_on_signals
    from dhns_search.cli.live import LiveTable, details_log, quiet_failed_trials
    from dhns_search.errors import TrackingError
    from dhns_search.search.runner import StudyInterrupted, run_study
    from dhns_search.search.study_setup import joined_options
    from dhns_search.search.workers import announce_ready, run_workers, worker_slots

    slots = worker_slots(options)
    log_path = options.work_dir / "logs" / f"{study_name}.log"
    with quiet_failed_trials(), details_log(log_path) as details, stop_on_signals() as (stop, received):
        announce_ready()  # a worker of run --workers: from now on a signal is a stop request
        try:
            if len(slots) > 1:
                summary = run_workers(joined_options(options) if options.join else options, console=console,
                                      stop=stop)
            else:
                one = replace(options, device=slots[0]) if options.devices else options
                summary = run_study(one, console=console, monitor=LiveTable(console, enabled=live), stop=stop)
        except TrackingError as err:  # one message; what the store's client said is in the log
            if details.written:
                raise TrackingError(f"{err} (details: {log_path})") from None
            raise
        except (StudyInterrupted, KeyboardInterrupt) as err:
            name = err.summary.study if isinstance(err, StudyInterrupted) else study_name
            if report:
                err_console.print(f"[yellow]interrupted[/]; continue with: {escape(continue_command(name))}",
                                  highlight=False, soft_wrap=True)
            raise typer.Exit(exit_code(received)) from None
    if report:
        _print_summary(summary, explicit_storage=options.storage is not None)


def continue_command(study: str) -> str:
    """The command line that continues this run: the one typed, with ``--study`` (``dhns-search run``)."""
    args = sys.argv[1:]
    if not args or args[0] not in ("run", "worker"):
        return f"dhns-search run --study {shlex.quote(study)}"
    if "--study" not in args and not any(a.startswith("--study=") for a in args):
        args = [args[0], "--study", study, *args[1:]]
    return "dhns-search " + shlex.join(args)


def _print_summary(summary, *, explicit_storage: bool) -> None:
    """What the run did, its best trial (or Pareto front), and how to export it."""
    counts = ", ".join(f"{v} {k.lower()}" for k, v in summary.states.items() if v)
    console.print(f"study [bold]{summary.study}[/]: {summary.n_trials} trials ({counts}); "
                  f"this run: {len(summary.new_trials)} in {summary.seconds:.1f}s")
    if not summary.new_trials and summary.budget is not None and summary.stopped == "budget met":
        console.print(f"the study's budget of {summary.budget} trials (--n-trials) is met; give a larger "
                      "--n-trials to run more", highlight=False)
    if summary.stopped and summary.stopped.startswith("CPU budget met"):
        console.print(f"the study's {summary.stopped} (--cpu-hours); give a larger --cpu-hours to run more",
                      highlight=False)
    if not summary.parent_ended and "artifacts" not in summary.plots_skipped:
        console.print("other workers are still running trials of this study; the last one to finish ends the "
                      "MLflow parent run", highlight=False)
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
