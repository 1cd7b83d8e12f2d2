"""``dhns-search ui``: the MLflow UI on the project's tracking store, a link per study (and how to open
optuna-dashboard)."""

from __future__ import annotations

from typing import Annotated

import typer

from dhns_search.cli._app import app, cli_errors, console
from dhns_search.search.options import DEFAULT_UI_HOST, DEFAULT_UI_PORT
from dhns_search.search.urls import DEFAULT_TRACKING_URI, default_storage


@app.command("ui")
@cli_errors
def ui_command(
    port: Annotated[int | None, typer.Option(
        "--port", help=f"Port of the MLflow UI; refused when taken. Default {DEFAULT_UI_PORT}, or the next free "
        "port when that one is taken.", show_default=False)] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = DEFAULT_UI_HOST,
    tracking_uri: Annotated[str, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = DEFAULT_TRACKING_URI,
    study: Annotated[str | None, typer.Option("--study", help="Print the link of this study only.")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Optuna storage URL for the optuna-dashboard command (default: the project's).")] = None,
) -> None:
    """Start the MLflow UI and print each study's link: its trials sorted by the objective, with the searched
    parameters. Ctrl-C (or SIGTERM) stops the UI and every process it started."""
    from dhns_search.search.storage import dashboard_command
    from dhns_search.tracking.ui import serve_ui

    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True, markup=False)

    dashboard = f"Optuna dashboard (pip install optuna-dashboard): {dashboard_command(storage or default_storage(study))}"
    raise typer.Exit(serve_ui(tracking_uri, host=host, port=port, study=study, say=say, notes=[dashboard]))
