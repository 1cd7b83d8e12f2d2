"""``dhns-search ui`` without a browser: ports, links, and stopping every process on Ctrl-C or SIGTERM.

The server here is a stand-in (a tiny HTTP server that starts a worker process, as uvicorn does), so these
tests take a second; ``tests/test_browser_ui.py`` runs the real MLflow UI."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from dhns_search.errors import ConfigError
from dhns_search.tracking import ui as ui_server
from dhns_search.tracking.ui import StudyLink, choose_port, port_free, serve_ui
from dhns_search.tracking.views import decode_view, runs_url, study_view_tags

#: a stand-in for ``mlflow ui``: answers /health on argv[1], starts a worker, writes both pids to argv[2]
FAKE_SERVER = textwrap.dedent("""
    import http.server, subprocess, sys
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[2], "w") as out:
        out.write(f"{__import__('os').getpid()} {worker.pid}")

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
""")


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_taken_port_is_refused_or_replaced_by_a_free_one(monkeypatch):
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is taken"):
            choose_port("127.0.0.1", port)  # asked for explicitly: refused
        monkeypatch.setattr(ui_server, "DEFAULT_UI_PORT", port)
        chosen, note = choose_port("127.0.0.1", None)  # the default: the next free one, and the user told
        assert chosen > port and port_free("127.0.0.1", chosen)
        assert note == f"port {port} is taken: using {chosen}"


def test_the_cli_refuses_a_taken_port_with_exit_code_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dhns_search.cli import app

    monkeypatch.chdir(tmp_path)
    with _listening_socket() as taken:
        res = CliRunner().invoke(app, ["ui", "--port", str(taken.getsockname()[1])])
    assert res.exit_code == 2 and "is taken" in res.output


def test_links_open_the_model_training_runs_table_on_a_saved_view():
    url = runs_url("http://127.0.0.1:5000", "7")
    assert url == ("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                   "&viewStateShareKey=dhns-leaderboard")
    tags = study_view_tags(["train.lr"], direction="minimize", extra_metrics=["objective.mr"], now_ms=1)
    name, state = decode_view(tags["mlflow.sharedViewState.dhns-leaderboard"])
    assert name.startswith("leaderboard")
    assert state["orderByAsc"] is True  # a minimised objective: smallest first
    assert state["selectedColumns"][:3] == ["metrics.`objective`", "metrics.`objective.mr`", "params.`train.lr`"]
    assert state["columnOrder"] == state["selectedColumns"]
    charts = runs_url("http://127.0.0.1:5000", "7", "dhns-compare")
    assert charts.endswith("viewStateShareKey=dhns-compare&compareRunsMode=CHART")  # opens on the charts
    tags = study_view_tags(["train.lr", "model.scorer", "model.gamma"], direction="maximize",
                           conditional=["model.gamma"], now_ms=1)
    name, state = decode_view(tags["mlflow.sharedViewState.dhns-compare"])
    assert name.startswith("comparison charts") and state["isAccordionReordered"] is True
    kinds = [(c["type"], c.get("xaxis", {}).get("key")) for c in state["compareRunCharts"]]
    assert kinds == [("SCATTER", "train.lr"), ("SCATTER", "model.scorer"), ("SCATTER", "model.gamma"),
                     ("PARALLEL", None), ("LINE", None)]
    parallel, line = state["compareRunCharts"][3:]
    assert parallel["selectedParams"] == ["train.lr", "model.scorer"] and parallel["selectedMetrics"] == ["objective"]
    assert line["metricKey"] == "valid_mrr" and line["xAxisKey"] == "step"
    sections = {s["uuid"]: s for s in state["compareRunSections"]}
    assert {c["metricSectionId"] for c in state["compareRunCharts"]} <= set(sections)
    # MLflow adds a chart per other metric to "Model metrics": that section is folded
    assert [s["display"] for s in sections.values() if s["name"] in ("Model metrics", "System metrics")] == [False] * 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_ctrl_c_sigterm_and_sighup_stop_every_process_the_ui_started(tmp_path, monkeypatch, sig):
    pids = tmp_path / "pids"
    monkeypatch.setattr(ui_server, "mlflow_ui_command",
                        lambda uri, *, port, host: [sys.executable, "-c", FAKE_SERVER, str(port), str(pids)])
    monkeypatch.setattr(ui_server, "study_links",
                        lambda uri, base, study=None: [StudyLink("s", f"{base}/board", f"{base}/trials", f"{base}/charts")])
    said: list[str] = []
    seen: dict[str, list[int]] = {}

    def say(text: str) -> None:
        said.append(text)
        if text.endswith("/board"):  # the link is printed: the server is up
            seen["pids"] = [int(p) for p in pids.read_text().split()]
            os.kill(os.getpid(), sig)  # the user presses Ctrl-C (or a supervisor sends SIGTERM)

    with _listening_socket() as probe:
        port = probe.getsockname()[1]
    # Ctrl-C reaches Python as KeyboardInterrupt only where SIGINT was not ignored when the interpreter
    # started (a background job of a non-interactive shell ignores it): give the test its usual handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert serve_ui("sqlite:///unused.db", port=port, say=say) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    server, worker = seen["pids"]
    assert not _alive(server) and not _alive(worker)
    assert ui_server._session_members(server) == []
    assert port_free("127.0.0.1", port)
    assert f"  s  http://127.0.0.1:{port}/board" in said and said[-1] == "stopping the MLflow UI"


# ------------------------------------------------------------------------ the app the UI serves
def _call(app, path: str, body: bytes, content_type: bytes) -> tuple[dict, bytes]:
    """Run ``app`` (ASGI) on a GET of ``path`` in front of a stand-in that answers ``body`` in two parts."""
    import asyncio

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:]})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(app(inner)({"type": "http", "method": "GET", "path": path}, receive, send))
    return dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_the_ui_page_sets_model_training_and_no_assistant_before_mlflow_runs():
    from dhns_search.tracking.ui_app import PAGE_DEFAULTS, PageDefaults, defaults_script

    assert PAGE_DEFAULTS == {"mlflow.workflowType_v1": "machine_learning",
                             "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
                             "mlflow.settings.telemetry.enabled_v1": False,
                             "mlflow.telemetry.info.alert.dismissed_v1": True}
    script = defaults_script()
    # stored as MLflow's useLocalStorage stores them (JSON), and only where the browser has no value yet
    assert b'if(s.getItem("mlflow.workflowType_v1")===null)s.setItem("mlflow.workflowType_v1","\\"machine_learning\\"")' \
        in script
    page = b'<!doctype html><html><head><meta charset="utf-8"/><script defer src="main.js"></script></head></html>'
    headers, body = _call(PageDefaults, "/", page, b"text/html; charset=utf-8")
    assert body.startswith(b"<!doctype html><html><head>" + script + b'<meta charset="utf-8"/>')  # before main.js
    assert int(headers[b"content-length"]) == len(body) == len(page) + len(script)
    data = b'{"runs": ["<head>"]}'
    headers, body = _call(PageDefaults, "/ajax-api/2.0/mlflow/runs/search", data, b"application/json")
    assert body == data and int(headers[b"content-length"]) == len(data)  # the API untouched
    headers, body = _call(PageDefaults, "/static-files/x.css", data, b"text/html")
    assert body == data  # only the page itself


def test_the_ui_server_runs_this_projects_app_with_telemetry_off(tmp_path):
    import subprocess

    from dhns_search.tracking.ui_app import APP_NAME, PLUGIN_PATH

    store = tmp_path / "mlflow.db"
    store.touch()
    command = ui_server.mlflow_ui_command(f"sqlite:///{store}", port=5999)
    assert command[command.index("--app-name") + 1] == APP_NAME
    env = ui_server.server_env({"PYTHONPATH": "/elsewhere", "DO_NOT_TRACK": "false"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PLUGIN_PATH), "/elsewhere"]
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DO_NOT_TRACK"] == "false"  # the user's choice kept
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # MLflow itself finds the app through the plugin's entry point, and it is a factory (uvicorn --factory)
    probe = ("import mlflow.server as s; app = s._find_app('dhns-search'); print(app, s._is_factory(app))")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", probe], env=ui_server.server_env({**os.environ, "PYTHONPATH": root}),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.split() == ["dhns_search.tracking.ui_app:create_app", "True"], out.stderr[-2000:]
