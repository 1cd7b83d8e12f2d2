"""``dhns-search train``: one final training run (or several seeds) from a config, preset or export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from dhns_search.cli._app import app, cli_errors, console, err_console, path_value
from dhns_search.errors import ConfigError, TrackingError, WriteError

if TYPE_CHECKING:
    from dhns_search.config.models import RunConfig
    from dhns_search.training.runs import SeedSummary

_SHOWN = [
    "mrr_realistic_filtered",
    "mrr_optimistic_filtered",
    "mr_realistic_filtered",
    "hits_at_1_realistic_filtered",
    "hits_at_3_realistic_filtered",
    "hits_at_10_realistic_filtered",
]


def _cell(summary: SeedSummary, split: str, key: str) -> str:
    k = f"{split}/{key}"
    if k not in summary.mean:
        return "-"
    fmt = "{:.2f}" if key.startswith("mr_") else "{:.4f}"
    return fmt.format(summary.mean[k]) + (f" ± {fmt.format(summary.std[k])}" if len(summary.results) > 1 else "")


def _print_summary(name: str, summary: SeedSummary, cfg: RunConfig) -> None:
    """The metrics table of a run (mean ± std over its seeds), its reproduction of a trial, its folder."""
    seeds = len(summary.results)
    title = f"{name}: best epoch {summary.results[0].best_epoch}" if seeds == 1 else f"{name}: {seeds} seeds"
    table = Table(title=title)
    for column, justify in (("metric", "left"), ("validation", "right"), ("test", "right")):
        table.add_column(column, justify=justify)
    for key in _SHOWN:
        table.add_row(key, _cell(summary, "valid", key), _cell(summary, "test", key))
    console.print(table)
    if summary.reproduction is not None:
        expected, got = summary.reproduction
        verdict = "[green]reproduced exactly[/]" if summary.reproduced else "[yellow]differs[/]"
        console.print(f"validation {cfg.train.metric}: study {expected:.6f}, this run {got:.6f}: {verdict}")
    console.print(f"run folder: {summary.out_dir}")


@app.command("train")
@cli_errors
def train_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", parser=path_value, help="Training config YAML (e.g. an export).")] = None,
    preset: Annotated[str | None, typer.Option("--preset", "-p", help="A shipped preset (see --list-presets).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Dataset directory (sets data.path).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="Dotted override, e.g. train.lr=0.001.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Train N seeds and report mean and std.")] = 1,
    out: Annotated[Path | None, typer.Option("--out", "-o", parser=path_value, help="Run folder (default runs/<name>-<time>).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (sets device).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="Log the runs to this MLflow store (one per seed, and a summary run with --seeds "
        "N). An export of a study is logged by default, into the study's experiment of sqlite:///mlruns/mlflow.db "
        "next to its trial; 'none' logs nothing.", show_default=False)] = None,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="List the shipped presets and exit.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the run in an existing --out folder.")] = False,
    resume: Annotated[Path | None, typer.Option(
        "--resume", parser=path_value, help="Continue an interrupted run from its folder (its config.yaml and checkpoint.pt); "
        "Ctrl-C or SIGTERM stops it at the next batch, checkpointed.", show_default=False)] = None,
) -> None:
    """Train DHNS (or a plain KGE model) and print validation and test metrics."""
    from dhns_search.config import load_config, preset_names, preset_summary
    from dhns_search.tracking.train_runs import train_tracked
    from dhns_search.training.runs import after_write_failure, default_run_dir

    if list_presets:
        table = Table("preset", "what it is", box=None, show_header=False)
        for name in preset_names():
            table.add_row(name, preset_summary(name))
        console.print(table)
        return
    if resume is not None:
        if config or preset or overrides or data or device or out or seeds != 1:
            raise ConfigError("--resume continues the run as it was configured: give it alone (no --config, "
                              "--preset, --set, --data, --device, --out or --seeds)")
        _resume(resume)
        return
    _check_strings(preset=preset, data=data, device=device, tracking_uri=tracking_uri)
    if out is not None:
        _check_out(out, force)
    if config is None and preset is None:
        raise ConfigError("give --config FILE or --preset NAME (see --list-presets)")
    extra = list(overrides or [])
    if data is not None:  # a string as typed (--data null is a folder named null, not YAML's null)
        extra.append(f"data.path={json.dumps(data)}")
    if device is not None:
        extra.append(f"device={device}")
    cfg = load_config(config, preset=preset, overrides=extra)
    name = preset or (config.stem if config else "run")
    out_dir = out or default_run_dir("runs", name)
    console.print(f"training [bold]{name}[/] ({cfg.model.scorer}, dhns={'on' if cfg.dhns.enabled else 'off'}, "
                  f"seed {cfg.seed}{f' +{seeds - 1}' if seeds > 1 else ''}) -> {out_dir}")
    existed = out_dir.exists()
    try:
        summary, tracked = train_tracked(cfg, name=name, seeds=seeds, out_dir=out_dir, tracking_uri=tracking_uri)
    except WriteError as err:
        raise after_write_failure(err, out_dir, created=not existed) from None
    except Exception as err:
        from dhns_search.search.trial import is_tracking_failure, tracking_reason
        from dhns_search.tracking.train_runs import tracking_target

        if not is_tracking_failure(err):
            raise
        again = "run the same command again"
        if out_dir.is_dir():
            again = f"the run folder {out_dir} holds what was trained; run the same command with --force"
        raise TrackingError(f"{tracking_reason(err, tracking_target(cfg, tracking_uri))}; {again} once the store "
                            "answers, or give --tracking-uri none") from None

    _print_summary(name, summary, cfg)
    if tracked is not None:
        linked = f", linked to the trial's run {tracked.replay_of}" if tracked.replay_of else ""
        console.print(f"mlflow: experiment {tracked.experiment!r}, {len(tracked.run_ids)} run(s)"
                      f"{' and a summary run' if tracked.summary_run_id else ''}{linked} in {tracked.tracking_uri}",
                      highlight=False, soft_wrap=True)


def _check_strings(*, preset: str | None, data: str | None, device: str | None, tracking_uri: str | None) -> None:
    """Options given empty (or impossible) are refused before anything is read or written."""
    if preset is not None and not preset.strip():
        raise ConfigError("--preset: empty; give a preset name (see --list-presets)")
    if data is not None and not data.strip():
        raise ConfigError("--data: empty; give a dataset folder, or leave --data out for the config's data.path "
                          "(null there is the embedded synthetic graph)")
    if device is not None and not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N (got {device!r})")
    if tracking_uri is not None and not tracking_uri.strip():
        raise ConfigError("--tracking-uri: empty; give an MLflow tracking URI, or none to log nothing")


def _check_out(out: Path, force: bool) -> None:
    """An existing run folder is not overwritten silently: continue it (--resume) or replace it (--force)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    from dhns_search.training.runs import is_run_folder

    if not is_run_folder(out):
        raise ConfigError(f"--out {out}: the folder exists and holds other files; give a new or empty folder")
    if not force:
        raise ConfigError(f"--out {out} holds a run already; continue it with dhns-search train --resume {out}, "
                          "or replace it with --force")
    import shutil

    shutil.rmtree(out)


def _resume(folder: Path) -> None:
    """``train --resume RUN_DIR``: continue the run in ``folder`` from its checkpoint."""
    from dhns_search.cli._signals import exit_code, stop_on_signals
    from dhns_search.training.loop import CONFIG_FILE, TrainingInterrupted
    from dhns_search.training.runs import resume_run, run_config

    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume {folder}: no {CONFIG_FILE} there (is it a run folder? with --seeds N, give "
                          "one seed's folder, e.g. RUN/seed-0)")
    cfg = run_config(folder)
    console.print(f"resuming [bold]{folder}[/] ({cfg.model.scorer}, seed {cfg.seed})")
    with stop_on_signals() as (stop, received):
        try:
            summary = resume_run(folder, cfg, stop=stop)
        except WriteError as err:
            raise WriteError(err.path, f"{err.reason}; the run keeps its last checkpoint: continue it with "
                             f"dhns-search train --resume {folder} once there is space") from None
        except (TrainingInterrupted, KeyboardInterrupt):
            err_console.print(f"[yellow]interrupted[/]; continue with: dhns-search train --resume {folder}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(exit_code(received)) from None
    _print_summary(folder.name, summary, cfg)
