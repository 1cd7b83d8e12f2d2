"""``dhns-search compare``: a paired ablation over seeds, with confidence intervals, resumable."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from dhns_search.cli._app import app, cli_errors, console, echo_err, path_value


@app.command("compare")
@cli_errors
def compare_command(
    ablation: Annotated[Path, typer.Argument(help="Ablation file (see ablations/*.yaml).", parser=path_value)],
    out: Annotated[Path | None, typer.Option("--out", "-o", parser=path_value, help="Output folder (default comparisons/<file stem>).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Seeds 0..N-1 instead of the file's.")] = None,
    arms: Annotated[str | None, typer.Option("--arms", help="Comma-separated subset of arms (the reference is always run).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="Dotted override for every arm, e.g. model.dim=128.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="Log to MLflow: one parent run per comparison, one child per arm and seed.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the training progress bar.")] = True,
) -> None:
    """Train every arm of an ablation over the same seeds and report paired differences with 95% intervals.

    Runs again with the same command continue where they stopped (finished runs are kept, interrupted
    ones resume from their checkpoint).  Ctrl-C or SIGTERM stops at the next batch and checkpoints.
    The same command started several times (or on machines sharing --out) shares the runs out: each is
    trained by one process.
    """
    from dhns_search.ablation import run_ablation
    from dhns_search.cli._signals import exit_code, stop_on_signals
    from dhns_search.training.loop import TrainingInterrupted

    if arms is not None and not [a for a in arms.split(",") if a.strip()]:
        from dhns_search.errors import ConfigError

        raise ConfigError("--arms: empty; give arm names (comma-separated), or leave --arms out for every arm")
    command = "dhns-search " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    def on_start(record, resumed: bool) -> None:
        console.print(f"[bold]{record.arm}[/] seed {record.seed}: {'resuming' if resumed else 'training'} "
                      f"-> {record.path}")

    def on_busy(record) -> None:
        console.print(f"[bold]{record.arm}[/] seed {record.seed}: another process is training it; taken up "
                      "after the others (finished there, or resumed here if that process stops)")

    try:
        with stop_on_signals() as (stop, received):  # first signal: stop at the next batch; second: now
            summary = run_ablation(
                ablation, out=out, overrides=list(overrides or []), seeds=seeds,
                arms=None if arms is None else [a.strip() for a in arms.split(",") if a.strip()],
                progress=progress, tracking_uri=tracking_uri, command=command, stop=stop, on_start=on_start,
                on_busy=on_busy)
    except TrainingInterrupted as err:
        echo_err(f"[yellow]interrupted[/]: {err}; the reports hold what finished.\ncontinue with: {command}")
        raise typer.Exit(exit_code(received)) from None
    c = summary.comparison
    console.print((c.out / "comparison.md").read_text(encoding="utf-8"), markup=False, highlight=False,
                  soft_wrap=True)
    console.print(f"reports: {c.out / 'comparison.md'}, {c.out / 'curves.png'}, {c.out / 'summary.json'}")
