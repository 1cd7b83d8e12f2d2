"""``dhns-search ui``: the MLflow UI on the project's tracking store (and how to open optuna-dashboard)."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from dhns_search.cli._app import app, cli_errors, console
from dhns_search.search.options import DEFAULT_UI_HOST, DEFAULT_UI_PORT
from dhns_search.search.urls import DEFAULT_TRACKING_URI, default_storage


@app.command("ui")
@cli_errors
def ui_command(
    port: Annotated[int, typer.Option("--port", help="Port of the MLflow UI.")] = DEFAULT_UI_PORT,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = DEFAULT_UI_HOST,
    tracking_uri: Annotated[str, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = DEFAULT_TRACKING_URI,
    study: Annotated[str | None, typer.Option(
        "--study", help="Print the optuna-dashboard command for this study.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL of --study.")] = None,
) -> None:
    """Start the MLflow UI on the project's tracking store (and say how to open optuna-dashboard)."""
    from dhns_search.search.storage import dashboard_command
    from dhns_search.search.tracking import ui_command as mlflow_ui

    cmd = mlflow_ui(tracking_uri, port=port, host=host)
    target = storage or default_storage(study or "STUDY")
    console.print(f"MLflow UI: http://{host}:{port}  (Ctrl-C stops it)", highlight=False, soft_wrap=True)
    console.print(f"Optuna dashboard (pip install optuna-dashboard): {dashboard_command(target)}",
                  highlight=False, soft_wrap=True)
    raise typer.Exit(subprocess.call(cmd))
