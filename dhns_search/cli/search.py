"""``dhns-search run | status | export | ui`` and ``dhns-search spaces validate | show``.

Each command parses its options and calls one library function of :mod:`dhns_search.search`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from dhns_search.cli._app import app, cli_errors, console

spaces_app = typer.Typer(help="Check and show search spaces (spaces/*.yaml).", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")

_DEFAULT_TRACKING = "sqlite:///mlruns/mlflow.db"


def _fmt(value: object) -> str:
    from dhns_search.search.space import format_value

    if isinstance(value, float):
        return f"{value:.4g}"
    return format_value(value)


# ---------------------------------------------------------------------------------------- run
@app.command("run")
@cli_errors
def run_command(
    space: Annotated[Path, typer.Option("--space", help="Search space YAML.")] = Path("spaces/default.yaml"),
    study: Annotated[str | None, typer.Option(
        "--study", help="Study name (default: the space file's stem); an existing study is continued.")] = None,
    n_trials: Annotated[int | None, typer.Option(
        "--n-trials", "-n", help="Trials to run now (default 12 when --timeout is not given either).")] = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Stop starting trials after SECONDS.")] = None,
    sampler: Annotated[str, typer.Option(
        "--sampler", help="tpe, random, cmaes, gp, qmc or nsga2 (several objectives: all but cmaes).")] = "tpe",
    pruner: Annotated[str | None, typer.Option(
        "--pruner", help="median, hyperband, successive-halving, percentile or none (default median; "
        "a multi-objective study runs without pruning).", show_default=False)] = None,
    objective: Annotated[str | None, typer.Option(
        "--objective", help="What to optimise, a comma list: accuracy (mrr, mr, hits@1, hits@3, hits@10, or a "
        "full metric name; maximised, mr minimised) and cost (epoch_seconds, train_seconds, peak_memory_mb; "
        "minimised), e.g. mrr,epoch_seconds. Default: the space's train.metric. Fixed when the study is "
        "created.", show_default=False)] = None,
    max_epoch_seconds: Annotated[float | None, typer.Option(
        "--max-epoch-seconds", help="Cap: trials whose mean epoch takes longer are infeasible.",
        show_default=False)] = None,
    max_train_seconds: Annotated[float | None, typer.Option(
        "--max-train-seconds", help="Cap on a trial's training wall time (evaluations included).",
        show_default=False)] = None,
    max_memory_mb: Annotated[float | None, typer.Option(
        "--max-memory-mb", help="Cap on a trial's peak memory in MiB (CUDA allocator peak on a GPU, process "
        "RSS on CPU).", show_default=False)] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Optuna storage URL (default sqlite:///studies/<study>.db; e.g. "
        "postgresql+psycopg://USER@HOST:5432/DB).")] = None,
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", help="MLflow tracking URI (artifacts go next to a SQLite file, under artifacts/); "
        "'none' = off.")] = _DEFAULT_TRACKING,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Study seed (fixed when the study is created; default 0). Trial seeds derive from it.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    enqueue: Annotated[list[str] | None, typer.Option(
        "--enqueue", help="Warm start: a config YAML, preset:NAME, or a mapping of parameter values "
        "(repeatable).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Dotted override of base + fixed, e.g. train.epochs=5 (repeatable).")] = None,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Show the live table of trials.")] = True,
) -> None:
    """Run (or continue) a hyperparameter study over a search space."""
    from dhns_search.search.study import RunOptions, run_study

    options = RunOptions(space=space, study=study, n_trials=n_trials, timeout=timeout, sampler=sampler,
                         pruner=pruner, storage=storage, tracking_uri=tracking_uri, seed=seed, device=device,
                         enqueue=list(enqueue or []), overrides=list(overrides or []), live=live,
                         objectives=objective, max_epoch_seconds=max_epoch_seconds,
                         max_train_seconds=max_train_seconds, max_memory_mb=max_memory_mb)
    summary = run_study(options, console=console)
    counts = ", ".join(f"{v} {k.lower()}" for k, v in summary.states.items() if v)
    console.print(f"study [bold]{summary.study}[/]: {summary.n_trials} trials ({counts}); "
                  f"this run: {len(summary.new_trials)} in {summary.seconds:.1f}s")
    if summary.n_infeasible:
        console.print(f"[magenta]{summary.n_infeasible} completed trials are infeasible[/] (over a cap); they are "
                      "left out of the best trials and of export picks", highlight=False)
    extra = f" --storage '{summary.storage}'" if options.storage else ""
    if len(summary.objectives) > 1:
        labels = [s.label for s in summary.objectives]
        if summary.front:
            console.print(f"Pareto front: {len(summary.front)} trials ({', '.join(labels)})", highlight=False)
            for number, values in summary.front:
                mark = "  <- knee" if number == summary.knee_trial else ""
                console.print(f"  trial {number}: " + ", ".join(f"{lab} {_fmt(v)}" for lab, v in zip(labels, values))
                              + mark, highlight=False)
            console.print(f"export it: dhns-search export {summary.study}{extra} --pick knee "
                          f"(or --pick best-{labels[0]}, --pick fastest-within 0.01)", highlight=False, soft_wrap=True)
        else:
            console.print("[yellow]no feasible completed trial yet[/]")
    elif summary.best_trial is not None:
        params = "  ".join(f"{k}={_fmt(v)}" for k, v in summary.best_params.items())
        console.print(f"best: trial {summary.best_trial}, {summary.metric} {summary.best_value:.4f}  {params}",
                      highlight=False)
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


# ------------------------------------------------------------------------------------- status
@app.command("status")
@cli_errors
def status_command(
    study: Annotated[str | None, typer.Argument(help="A study name; without it, list the studies.")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Optuna storage URL (default: every studies/*.db).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Trials shown in the leaderboard.")] = 10,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also write a PNG: the Pareto front of a multi-objective study (knee starred, infeasible "
        "trials crossed), the optimisation history of a single-objective one.", show_default=False)] = None,
) -> None:
    """List studies, or show one study's leaderboard (and the Pareto front of a multi-objective study)."""
    from dhns_search.search.study import list_studies, study_report

    if study is None:
        if plot is not None:
            raise typer.BadParameter("--plot needs a study name", param_hint="--plot")
        infos = list_studies(storage)
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
        return

    report = study_report(study, storage, top=top)
    counts = ", ".join(f"{v} {k.lower()}" for k, v in report.states.items() if v) or "no trials"
    console.print(f"study [bold]{report.name}[/] ({report.storage}): {counts}", highlight=False)
    console.print(f"space {report.space}, seed {report.seed}, metric {report.metric}", highlight=False)
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
        from dhns_search.search.study import short_names

        names: list[str] = []
        for r in report.rows:
            names += [k for k in r.params if k not in names]
        short = short_names(names)
        title = f"best {len(report.rows)} trials by validation {report.metric}" + (" (feasible)" if report.caps else "")
        table = Table(title=title, title_justify="left")
        for col in ("rank", "trial", "value", "epoch", "seconds"):
            table.add_column(col, justify="right", no_wrap=True)
        headers = {"epoch_seconds": "epoch s", "peak_memory_mb": "peak MiB"}
        measured = [m for m in headers if any(m in r.measures for r in report.rows)]
        for m in measured:
            table.add_column(headers[m], justify="right", no_wrap=True)
        table.add_column("parameters", ratio=1, min_width=24)
        for r in report.rows:
            params = "  ".join(f"{short[k]}={_fmt(v)}" for k, v in r.params.items())
            table.add_row(str(r.rank), str(r.number), f"{r.value:.4f}", str(r.best_epoch),
                          "-" if r.seconds is None else f"{r.seconds:.1f}",
                          *(f"{r.measures[m]:.4g}" if m in r.measures else "-" for m in measured), params)
        console.print(table)
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
    if plot is not None:
        from dhns_search.search.plots import write_study_plot
        from dhns_search.search.study import open_study

        written = write_study_plot(open_study(study, storage)[0], plot)
        console.print(f"plot: {written}", highlight=False)


def _print_front(report) -> None:
    """The Pareto front of a multi-objective study as a table (knee and best-<objective> marked)."""
    from dhns_search.search.study import short_names

    if not report.front:
        console.print("[yellow]no feasible completed trial yet: the Pareto front is empty[/]")
        return
    names: list[str] = []
    for r in report.front:
        names += [k for k in r.params if k not in names]
    short = short_names(names)
    table = Table(title=f"Pareto front: {len(report.front)} of {report.n_feasible} feasible completed trials",
                  title_justify="left")
    table.add_column("trial", justify="right", no_wrap=True)
    for o in report.objectives:
        table.add_column(f"{o.label} ({o.arrow})", justify="right", overflow="fold")
    headers = {"epoch_seconds": "epoch s", "peak_memory_mb": "peak MiB"}
    measured = [m for m in headers
                if m not in {o.name for o in report.objectives} and any(m in r.measures for r in report.front)]
    for m in measured:
        table.add_column(headers[m], justify="right", no_wrap=True)
    table.add_column("pick", overflow="fold")
    table.add_column("parameters", ratio=1, min_width=24)
    for r in report.front:
        cells = [str(r.number), *(f"{r.values[o.name]:.4g}" for o in report.objectives),
                 *(f"{r.measures[m]:.4g}" if m in r.measures else "-" for m in measured)]
        pick = Text(", ".join(r.picks), style="bold" if "knee" in r.picks else "")
        params = "  ".join(f"{short[k]}={_fmt(v)}" for k, v in r.params.items())
        table.add_row(*cells, pick, params)
    console.print(table)
    console.print("export one: dhns-search export " + report.name + " --pick knee | best-"
                  + report.objectives[0].label + " | fastest-within D", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------- export
@app.command("export")
@cli_errors
def export_command(
    study: Annotated[str, typer.Argument(help="Study name.", show_default=False)],
    within: Annotated[str | None, typer.Argument(
        help="The D of --pick fastest-within D.", show_default=False, metavar="D")] = None,
    top: Annotated[int | None, typer.Option(
        "--top", help="Export the K best feasible trials by the primary objective (default 1).",
        show_default=False)] = None,
    pick: Annotated[str | None, typer.Option(
        "--pick", help="Choose one trial from the Pareto front: knee, best-<objective> (e.g. best-mrr, "
        "best-epoch_seconds), or fastest-within D (the cheapest trial whose accuracy is within D of the best, "
        "e.g. --pick fastest-within 0.01). Default for a multi-objective study: knee.",
        show_default=False)] = None,
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help="Output file, or a folder (an existing one, or a path ending in /) to write "
        "<study>-trial<N>.yaml into (default exports/); a file with --top K gets the rank added before "
        "the suffix.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL.")] = None,
) -> None:
    """Write standalone training configs of the best trials (replay with dhns-search train --config)."""
    from dhns_search.errors import ConfigError
    from dhns_search.search.export import export_best

    if within is not None:
        if pick is None or pick.strip().lower() != "fastest-within":
            raise ConfigError(f"unexpected argument {within!r}: only --pick fastest-within takes a value "
                              "(e.g. --pick fastest-within 0.01)")
        pick = f"{pick} {within}"
    for path, cfg in export_best(study, storage=storage, top=top, out=out, pick=pick):
        p = cfg.provenance or {}
        chosen = f" (--pick {p['pick']})" if p.get("pick") else ""
        console.print(f"trial {p.get('trial')}{chosen}: {p.get('valid_metric')} {p.get('valid_value'):.4f}, "
                      f"{cfg.train.epochs} epochs, seed {cfg.seed} -> {path}", highlight=False)
        if p.get("objectives"):
            console.print(f"  objectives: {p['objectives']}", highlight=False, soft_wrap=True)
    console.print("replay: dhns-search train --config FILE", highlight=False)


# ----------------------------------------------------------------------------------------- ui
@app.command("ui")
@cli_errors
def ui_command(
    port: Annotated[int, typer.Option("--port", help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    tracking_uri: Annotated[str, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = _DEFAULT_TRACKING,
    study: Annotated[str | None, typer.Option(
        "--study", help="Print the optuna-dashboard command for this study.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL of --study.")] = None,
) -> None:
    """Start the MLflow UI on the project's tracking store (and say how to open optuna-dashboard)."""
    from dhns_search.search.study import dashboard_command, default_storage
    from dhns_search.search.study import ui_command as build

    cmd = build(tracking_uri, port=port, host=host)
    target = storage or (default_storage(study) if study else "sqlite:///studies/STUDY.db")
    console.print(f"MLflow UI: http://{host}:{port}  (Ctrl-C stops it)", highlight=False, soft_wrap=True)
    console.print(f"Optuna dashboard (pip install optuna-dashboard): {dashboard_command(target)}",
                  highlight=False, soft_wrap=True)
    raise typer.Exit(subprocess.call(cmd))


# ------------------------------------------------------------------------------------- spaces
@spaces_app.command("validate")
@cli_errors
def spaces_validate(
    files: Annotated[list[Path], typer.Argument(help="Space files.", show_default=False)],
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Dotted overrides to check with base + fixed.")] = None,
) -> None:
    """Validate space files (schema, paths, bounds, conditions, base + fixed)."""
    from dhns_search.search.space import load_space

    for f in files:
        space = load_space(f, overrides=list(overrides or []))
        n_cond = sum(1 for p in space.params if p.when)
        console.print(f"[green]ok[/] {f}: {len(space.params)} parameters ({n_cond} conditional), "
                      f"base {space.base_name or 'defaults'}, {len(space.fixed)} fixed", highlight=False)


@spaces_app.command("show")
@cli_errors
def spaces_show(file: Annotated[Path, typer.Argument(help="Space file.", show_default=False)]) -> None:
    """Show a space's parameters in sampling order."""
    from dhns_search.search.space import format_value, load_space

    space = load_space(file)
    if space.description:
        console.print(space.description.strip(), highlight=False)
    console.print(f"base: {space.base_name or 'defaults'}", highlight=False)
    if space.fixed:
        console.print("fixed: " + ", ".join(f"{k}={format_value(v)}" for k, v in space.fixed.items()),
                      highlight=False)
    table = Table(title=f"{file}: {len(space.params)} parameters in sampling order", title_justify="left")
    table.add_column("parameter", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("range / choices", overflow="fold")
    table.add_column("when", overflow="fold")
    for p in space.params:
        when = ", ".join(f"{k} in {{{' | '.join(format_value(v) for v in vals)}}}" for k, vals in p.when.items())
        rng = Text(p.describe_range())
        if p.spec.description:
            rng.append("\n" + p.spec.description.strip(), style="dim")
        table.add_row(p.name, "bundle" if p.is_bundle else p.spec.type, rng, when)
    console.print(table)
    for p in space.params:
        if not p.is_bundle:
            continue
        console.print(f"bundle [bold]{p.name}[/] sets {', '.join(p.targets)}:", highlight=False)
        for label, values in p.spec.choices.items():  # type: ignore[union-attr]
            console.print(f"  {label}: " + "  ".join(f"{k}={format_value(v)}" for k, v in values.items()),
                          highlight=False, soft_wrap=True)
