"""The web app that ``dhns-search ui`` serves: MLflow's own server app, whose page opens with this project's
defaults for the browser (MLflow 3.17 keeps them in the browser's local storage, not on the server):

- ``mlflow.workflowType_v1 = "machine_learning"``: the model-training pages (Runs, Models), not the GenAI
  ones.  MLflow's UI reads the workflow type from the URL (``?workflowType=``), else from this key, else
  it shows its GenAI pages; the links inside the UI (a run's name, Compare, the breadcrumbs) do not carry
  the URL parameter, so without the key every click left the study for the GenAI pages;
- ``mlflow.assistant.fab.autoOpenedOnFirstLoad_v1 = true``: the MLflow Assistant panel is not opened by
  itself on the first visit (on a server at localhost it would take a third of the width); its button
  stays;
- ``mlflow.settings.telemetry.enabled_v1 = false`` and ``mlflow.telemetry.info.alert.dismissed_v1 =
  true``: the UI's own usage telemetry is off in the browser as well (the server already answers that it
  is off, :mod:`.ui` sets ``MLFLOW_DISABLE_TELEMETRY``), and the home page does not announce that it
  collects usage data.

A key the browser already holds is left alone: a user who switches to the GenAI pages keeps them.

MLflow serves a custom app through its documented plugin point, an ``mlflow.app`` entry point
(``mlflow server --app-name NAME``): :data:`PLUGIN_PATH` holds a metadata-only distribution declaring
``dhns-search = dhns_search.tracking.ui_app:create_app``, which :mod:`.ui` puts on the server's
``PYTHONPATH``; it works from a checkout and from an installed package alike.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["APP_NAME", "PAGE_DEFAULTS", "PLUGIN_PATH", "PageDefaults", "create_app", "defaults_script"]

#: the ``--app-name`` of ``mlflow ui`` that serves :func:`create_app`
APP_NAME = "dhns-search"
#: the folder to put on ``PYTHONPATH`` so that MLflow finds the ``mlflow.app`` entry point :data:`APP_NAME`
PLUGIN_PATH = Path(__file__).resolve().parent / "mlflow_plugin"
#: local-storage key -> value (JSON) that the UI's page sets when the browser has none
PAGE_DEFAULTS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.settings.telemetry.enabled_v1": False,
    "mlflow.telemetry.info.alert.dismissed_v1": True,
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def defaults_script(defaults: dict[str, Any] = PAGE_DEFAULTS) -> bytes:
    """A ``<script>`` that stores each default unless the browser has the key already."""
    body = "".join(f"if(s.getItem({json.dumps(k)})===null)s.setItem({json.dumps(k)},{json.dumps(json.dumps(v))});"
                   for k, v in defaults.items())
    return f"<script>(function(){{try{{var s=window.localStorage;{body}}}catch(e){{}}}})();</script>".encode()


class PageDefaults:
    """ASGI middleware: the HTML page of the UI gets :func:`defaults_script` at the top of its ``<head>``,
    before MLflow's own scripts run; every other response passes through untouched."""

    def __init__(self, app: App, script: bytes | None = None) -> None:
        self.app = app
        self.script = defaults_script() if script is None else script

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or not scope.get("path", "").endswith("/"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def patched(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers") or []}
                if not headers.get(b"content-type", b"").startswith(b"text/html") or b"content-encoding" in headers:
                    start = None
                    await send(message)
                    return
                start = message  # held back until the body is complete (its length changes)
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _inject(b"".join(chunks), self.script)
            headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, patched)


def _inject(html: bytes, script: bytes) -> bytes:
    """``script`` right after ``<head>`` (or at the start when the page has none)."""
    at = html.find(b"<head>")
    if at < 0:
        return script + html
    at += len(b"<head>")
    return html[:at] + script + html[at:]


def create_app() -> App:
    """MLflow's server app (FastAPI around the Flask tracking server) behind :class:`PageDefaults`; called
    by uvicorn in each server worker (a factory: importing this module costs nothing)."""
    from mlflow.server.fastapi_app import app

    return PageDefaults(app)
