"""The MLflow comparison in a real browser: ``dhns-search ui`` on a small study (two completed trials, one
pruned, one failed), Debian's Chromium driven by Playwright.

Checked on the page's text and structure, never on pixels: the printed link opens the runs table sorted by
the objective with the searched parameters as columns; a pruned trial carries the completed trials' status
(not the failed one's); the trials view nests the trial runs under the study's parent run; the parent's
artifacts hold the interactive plots; SIGTERM stops the UI and every process it started.  Screenshots go
to ``build/browser-screenshots/`` (for a person to look at; nothing compares them).

Needs ``/usr/bin/chromium`` (``scripts/setup.sh`` installs it as root) and ``playwright`` (the ``dev``
extra); Playwright does not download a browser of its own.  Without them the module is skipped, except on
CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "build" / "browser-screenshots"
#: seconds for the study's UI to come up (MLflow's first start migrates its database)
START_TIMEOUT = 240
PAGE_TIMEOUT = 60_000  # ms

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def _missing() -> list[str]:
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium; scripts/setup.sh does it as root)")
    return missing


if _missing():
    message = "browser check needs " + " and ".join(_missing())
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

from mlflow.tracking import MlflowClient  # after the check above
from mlflow_study import BEST, run_comparison_study
from playwright.sync_api import sync_playwright

from dhns_search.tracking.ui import _session_members, port_free


@dataclass
class Ui:
    process: subprocess.Popen
    port: int
    tracking: str
    experiment_id: str
    lines: list[str] = field(default_factory=list)

    def link(self, view: str) -> str:
        return next(line.split()[-1] for line in self.lines if f"viewStateShareKey={view}" in line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read(stream, lines: list[str], ready: queue.Queue) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))
        if "viewStateShareKey=dhns-trials" in line:
            ready.put(True)
    ready.put(False)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    tracking = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        study = run_comparison_study(folder, tracking, mp)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "dhns_search", "ui", "--tracking-uri", tracking, "--port", str(port)],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    running = Ui(process, port, tracking, study.summary.experiment_id)
    ready: queue.Queue = queue.Queue()
    threading.Thread(target=_read, args=(process.stdout, running.lines, ready), daemon=True).start()
    try:
        assert ready.get(timeout=START_TIMEOUT), "\n".join(running.lines)
        yield running
    finally:
        if process.poll() is None:  # a test failed before the SIGTERM test: stop everything it started
            for pid in _session_members(process.pid):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


@pytest.fixture(scope="module")
def page():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dhns-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(PAGE_TIMEOUT)
        yield context.new_page()
        context.close()


def _rows(page) -> list[tuple[str, str]]:
    """``(run name, status icon class)`` of the table's rows, in display order."""
    rows = []
    for row in page.locator("[role=row][row-index]").all():
        name = row.locator('[col-id="attributes.`Run Name`"]')
        if name.count():
            icon = row.locator('[col-id="runDateAndNestInfo"] .anticon')
            rows.append((int(row.get_attribute("row-index")), name.inner_text().split("\n")[-1].strip(),
                         icon.first.get_attribute("class") if icon.count() else ""))
    return [(name, icon) for _, name, icon in sorted(rows)]


def _runs(ui: Ui) -> dict:
    client = MlflowClient(ui.tracking)
    out = {}
    for run in client.search_runs([ui.experiment_id]):
        out[run.data.tags.get("dhns.trial_number", "parent")] = run.info.run_id
    return out


def test_the_printed_link_shows_the_trials_sorted_by_the_objective(ui, page):
    link = ui.link("dhns-leaderboard")
    assert link.startswith(f"http://127.0.0.1:{ui.port}/#/experiments/{ui.experiment_id}/runs?")
    page.goto(link)
    page.get_by_text("trial-0003").first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / "leaderboard.png"))
    headers = [h.strip() for h in page.locator("[role=columnheader]").all_inner_texts()]
    for column in ("objective", "train.lr", "model.scorer", "model.gamma", "dhns.state"):
        assert column in headers, (column, headers)
    body = page.inner_text("body")
    assert "Sort: objective" in body and "Comparison test space" in body  # sorted; the space's description
    assert "No data available" not in body  # not the GenAI overview
    rows = _rows(page)
    names = [name for name, _ in rows]
    assert names[:2] == [f"trial-{BEST:04d}", "trial-0000"], names  # the best trial first
    icon = dict(rows)
    assert icon["trial-0001 (pruned)"] == icon["trial-0000"] != icon["trial-0002 (failed)"]  # the state in the name
    assert "PRUNED" in body and "FAIL" in body


def test_a_pruned_trial_is_finished_and_a_failed_one_failed_on_their_run_pages(ui, page):
    runs = _runs(ui)
    base = f"http://127.0.0.1:{ui.port}/#/experiments/{ui.experiment_id}/runs"
    page.goto(f"{base}/{runs['1']}?workflowType=machine_learning")
    page.get_by_text("About this run").first.wait_for()
    pruned = page.inner_text("body")
    assert "Status\nFinished" in pruned and "Pruned at epoch 2" in pruned
    page.screenshot(path=str(SCREENSHOTS / "pruned-trial.png"))
    page.goto(f"{base}/{runs['2']}?workflowType=machine_learning")
    page.get_by_text("About this run").first.wait_for()
    page.get_by_text("Status").first.wait_for()
    failed = page.inner_text("body")
    assert "Status\nFailed" in failed and "Failed: TrainingError" in failed


def test_the_trials_view_nests_the_trial_runs_under_the_study_run(ui, page):
    page.goto(ui.link("dhns-trials"))
    parent = page.locator('[role=gridcell][col-id="attributes.`Run Name`"]', has_text="compare").first
    parent.wait_for()
    assert [name for name, _ in _rows(page)] == ["compare"]  # folded: the trials are inside
    parent.locator("button").first.click()  # unfold the study's run
    page.get_by_text("trial-0000").first.wait_for()
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / "trials-nested.png"))
    names = [name for name, _ in _rows(page)]
    assert names[0] == "compare" and sorted(names[1:]) == ["trial-0000", "trial-0001 (pruned)", "trial-0002 (failed)",
                                                           "trial-0003"], names


def test_the_parent_run_holds_the_interactive_plots(ui, page):
    parent = _runs(ui)["parent"]
    page.goto(f"http://127.0.0.1:{ui.port}/#/experiments/{ui.experiment_id}/runs/{parent}/artifacts"
              "?workflowType=machine_learning")
    page.get_by_text("plots", exact=True).first.click()
    for name in ("optimization_history", "intermediate_values", "parallel_coordinate", "param_importances"):
        page.get_by_text(f"{name}.html", exact=True).first.wait_for()
        page.get_by_text(f"{name}.png", exact=True).first.wait_for()
    page.get_by_text("parallel_coordinate.html", exact=True).first.click()
    deadline = time.monotonic() + PAGE_TIMEOUT / 1000
    while not any(f.url.startswith("blob:") for f in page.frames) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    frame = next(f for f in page.frames if f.url.startswith("blob:"))
    frame.get_by_text("valid mrr (realistic)").first.wait_for()  # drawn by plotly, the axis named
    page.screenshot(path=str(SCREENSHOTS / "interactive-plot.png"))


def test_sigterm_stops_the_ui_and_every_process_it_started(ui):
    # the ui runs `mlflow ui` in a session of its own: that process, uvicorn and its workers
    servers = [int(p.name) for p in Path("/proc").glob("[0-9]*") if _ppid(p) == ui.process.pid]
    assert len(servers) == 1, servers
    assert len(_session_members(servers[0])) >= 2  # the server and its worker(s)
    ui.process.send_signal(signal.SIGTERM)
    assert ui.process.wait(timeout=60) == 0
    assert _session_members(servers[0]) == []
    assert port_free("127.0.0.1", ui.port)
    assert "stopping the MLflow UI" in "\n".join(ui.lines)


def _ppid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
