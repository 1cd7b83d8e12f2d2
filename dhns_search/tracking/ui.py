"""``dhns-search ui``: the MLflow UI on the project's tracking store, a link per study, and a clean stop.

- **Port.** A port that is taken is refused before anything starts (an explicit ``--port``), or the next
  free one is taken and the user told so (the default port).
- **Processes.** ``mlflow ui`` starts a uvicorn server with its workers and, unless switched off, a job
  runner with a dozen consumers (for GenAI judges; this project has no use for it, so it is off unless
  ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is set).  The server runs in a session of its own; on Ctrl-C or
  SIGTERM every process of that session gets SIGTERM, and SIGKILL after :data:`STOP_GRACE` seconds,
  so nothing is left holding the port.
- **Pages.** The server is MLflow's app with this project's browser defaults (:mod:`.ui_app`, served as
  the ``mlflow.app`` plugin ``dhns-search``): every page opens in MLflow's model-training mode, and the
  Assistant panel does not open by itself.  MLflow's telemetry is off for the server's processes
  (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``) unless the environment says otherwise.
- **Links.** Once the server answers, each study's links open its runs table on the saved leaderboard view
  and on the comparison charts (:mod:`.views`), and one link shows the trials nested under a study's run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dhns_search.errors import ConfigError, StudyError
from dhns_search.files import sqlite_path
from dhns_search.tracking.store import DEFAULT_TRACKING_URI
from dhns_search.tracking.ui_app import APP_NAME, PLUGIN_PATH
from dhns_search.tracking.views import COMPARE_VIEW, LEADERBOARD_VIEW, TRIALS_VIEW, runs_url

__all__ = ["DEFAULT_UI_HOST", "DEFAULT_UI_PORT", "STOP_GRACE", "StudyLink", "UiServer", "choose_port",
           "mlflow_ui_command", "serve_ui", "server_env", "study_links"]

#: where ``dhns-search ui`` serves the MLflow UI
DEFAULT_UI_HOST = "127.0.0.1"
DEFAULT_UI_PORT = 5000

#: seconds the server's processes get to end after SIGTERM before SIGKILL
STOP_GRACE = 10.0
#: seconds to wait for the server to answer
READY_TIMEOUT = 180.0


def mlflow_ui_command(tracking_uri: str = DEFAULT_TRACKING_URI, *, port: int = DEFAULT_UI_PORT,
                      host: str = DEFAULT_UI_HOST, workers: int = 1) -> list[str]:
    """The ``mlflow ui`` command line for the project's tracking store, serving this project's app
    (:mod:`.ui_app`; the command needs :func:`server_env`)."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise StudyError(f"no MLflow tracking store at {path}; run dhns-search run first")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", str(workers), "--app-name", APP_NAME,
            "--uvicorn-opts", "--no-access-log"]  # a line per request would bury the links


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the UI's processes: ``base`` (default: this process's) with the plugin of
    :mod:`.ui_app` first on ``PYTHONPATH``, MLflow's telemetry and job runner off unless ``base`` sets
    them."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_PATH), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, port: int | None) -> tuple[int, str | None]:
    """``(port, note)``: ``port`` if free; a taken explicit port is a :class:`ConfigError`; ``None`` means
    the default port, or the next free one (the note says which)."""
    if port is not None:
        if not port_free(host, port):
            raise ConfigError(f"port {port} on {host} is taken (another MLflow UI, or another server); give "
                              "another with --port N, or leave --port out to take a free one")
        return port, None
    for candidate in range(DEFAULT_UI_PORT, DEFAULT_UI_PORT + 100):
        if port_free(host, candidate):
            note = None if candidate == DEFAULT_UI_PORT else f"port {DEFAULT_UI_PORT} is taken: using {candidate}"
            return candidate, note
    raise ConfigError(f"no free port in {DEFAULT_UI_PORT}-{DEFAULT_UI_PORT + 99} on {host}; give one with --port N")


@dataclass(frozen=True)
class StudyLink:
    study: str
    leaderboard: str  # the runs table sorted by the objective
    trials: str  # the trials nested under the study's parent run
    compare: str  # the charts comparing the trials


def study_links(tracking_uri: str, base_url: str, study: str | None = None) -> list[StudyLink]:
    """The links of every study in the tracking store (experiments with a ``dhns.study`` tag), by name."""
    from dhns_search.tracking.tracker import Tracker  # mlflow: only once the command runs

    links = []
    for experiment_id, _, tags in Tracker(tracking_uri).experiments():
        name = tags.get("dhns.study")
        if name and (study is None or name == study):
            links.append(StudyLink(name, runs_url(base_url, experiment_id, LEADERBOARD_VIEW),
                                   runs_url(base_url, experiment_id, TRIALS_VIEW),
                                   runs_url(base_url, experiment_id, COMPARE_VIEW)))
    return sorted(links, key=lambda link: link.study)


# ------------------------------------------------------------------------------------ processes
def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (Linux /proc; elsewhere: none known)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command: state, ppid, pgrp, session
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


class UiServer:
    """``mlflow ui`` in a session of its own: :meth:`start`, :meth:`wait_ready`, :meth:`stop`."""

    def __init__(self, command: list[str], *, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> UiServer:
        self.process = subprocess.Popen(self.command, env=server_env({**os.environ, **(self.env or {})}),
                                        start_new_session=True)
        return self

    def wait_ready(self, url: str, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until ``url`` answers (True) or the server exits (False)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
                return True
            time.sleep(0.3)
        return False

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to every process of the server's session, SIGKILL to what is left after ``grace``."""
        if self.process is None:
            return
        sid = self.process.pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            members = set(_session_members(sid))
            if self.process.poll() is None:
                members.add(sid)
            if not members:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sid, sig)
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and (self.process.poll() is None or _session_members(sid)):
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


class _Stop(Exception):
    """SIGTERM or SIGHUP (a closed terminal) arrived (handled like Ctrl-C)."""


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    def raise_stop(signum, frame):
        raise _Stop

    signals = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, raise_stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_ui(tracking_uri: str = DEFAULT_TRACKING_URI, *, host: str = DEFAULT_UI_HOST, port: int | None = None,
             study: str | None = None, say: Callable[[str], None] = print, notes: Sequence[str] = ()) -> int:
    """Run the MLflow UI until Ctrl-C or SIGTERM (then stop every process it started, return 0), or until
    the server exits by itself (return its exit code).  ``say`` prints what the user should read: the
    links once the server answers, then ``notes``."""
    chosen, note = choose_port(host, port)
    command = mlflow_ui_command(tracking_uri, port=chosen, host=host)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown_host}:{chosen}"
    if note:
        say(note)
    say(f"MLflow UI: {base}  (starting; Ctrl-C stops it)")
    server = UiServer(command)
    with _sigterm_stops():
        try:
            server.start()
            if not server.wait_ready(f"{base}/health"):
                code = server.process.poll() if server.process else None
                say(f"the MLflow UI did not start (exit code {code}); see its messages above")
                return code or 1
            _say_links(tracking_uri, base, study, say)
            for note in notes:
                say(note)
            return server.process.wait()
        except (KeyboardInterrupt, _Stop):
            say("stopping the MLflow UI")
            return 0
        finally:
            server.stop()


def _say_links(tracking_uri: str, base: str, study: str | None, say: Callable[[str], None]) -> None:
    links = study_links(tracking_uri, base, study)
    if not links:
        say("ready; no study in this tracking store yet" + (f" named {study!r}" if study else ""))
        return
    say("ready. Each study's runs, best first (objective and searched parameters):")
    width = max(len(link.study) for link in links)
    for link in links:
        say(f"  {link.study:<{width}}  {link.leaderboard}")
    say("Charts comparing each study's trials (objective against each searched parameter, parallel "
        "coordinates, validation curves):")
    for link in links:
        say(f"  {link.study:<{width}}  {link.compare}")
    say("The trials nested under each study's run: the view 'trials under the study run' (Views menu), e.g.")
    say(f"  {links[0].trials}")
