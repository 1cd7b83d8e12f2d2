"""``dhns-search export``: standalone training configs of a study's best trials."""

from __future__ import annotations

from typing import Annotated

import typer

from dhns_search.cli._app import app, cli_errors, console
from dhns_search.errors import ConfigError


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
    force: Annotated[bool, typer.Option("--force", help="Replace an export file that exists (the default one or --out).")] = False,
    where: Annotated[list[str] | None, typer.Option(
        "--where", help="Only trials whose parameter has this value, NAME=VALUE (repeatable), e.g. "
        "--where dhns.enabled=false for a campaign's best uniform trial.", show_default=False)] = None,
) -> None:
    """Write standalone training configs of the best trials (replay with dhns-search train --config)."""
    from dhns_search.search.export import export_best

    if within is not None:
        if pick is None or pick.strip().lower() != "fastest-within":
            raise ConfigError(f"unexpected argument {within!r}: only --pick fastest-within takes a value "
                              "(e.g. --pick fastest-within 0.01)")
        pick = f"{pick} {within}"
    filters = {}
    for item in where or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--where {item!r}: expected NAME=VALUE, e.g. dhns.enabled=false")
        filters[name.strip()] = value.strip()
    for path, cfg in export_best(study, storage=storage, top=top, out=out, pick=pick, force=force, where=filters):
        p = cfg.provenance or {}
        chosen = f" (--pick {p['pick']})" if p.get("pick") else ""
        console.print(f"trial {p.get('trial')}{chosen}: {p.get('valid_metric')} {p.get('valid_value'):.4f}, "
                      f"{cfg.train.epochs} epochs, seed {cfg.seed} -> {path}", highlight=False)
        if p.get("objectives"):
            console.print(f"  objectives: {p['objectives']}", highlight=False, soft_wrap=True)
    console.print("replay: dhns-search train --config FILE", highlight=False)
