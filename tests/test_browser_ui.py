"""The MLflow UI in a real browser: ``dhns-search ui`` on a small study (two completed trials, one pruned,
one failed) and a replay of its best trial (``dhns-search train --config <export>``), Debian's Chromium
driven by Playwright.

Checked on the page's text and structure, never on pixels, from the links ``ui`` prints, clicking on:
the leaderboard opens sorted by the objective with the searched parameters as columns, and a pruned trial
differs from a completed one on the first screen (its name, its state column), not by the failed one's
status icon; the comparison link opens on charts that compare the trials, each drawn with data; a trial's
name leads to its page and from there to its replay; the study's run leads to the page holding every
interactive plot; two runs selected and *Compare* pressed lead to MLflow's comparison page; the bare server
URL opens the model-training pages.  No page reached so shows MLflow's GenAI pages (their sidebar:
Overview, Evaluation, Judges, Prompts ...; MLflow 3.17's model-training sidebar has Runs, Models and
Traces).  The trials view nests the trial runs under the study's parent run; SIGTERM stops the UI and every
process it started.  Screenshots go to ``build/browser-screenshots/`` (for a person to look at; nothing
compares them).

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
#: seconds for the replay (the real trainer, 3 epochs on a 30-entity graph)
REPLAY_TIMEOUT = 300
#: sidebar entries of MLflow 3.17's GenAI pages that its model-training pages lack ("Traces" is in both)
GENAI_ONLY = {"Overview", "Observability", "Sessions", "Evaluation", "Evaluations", "Judges", "Review", "Datasets",
              "Evaluation runs", "Prompts", "Prompts & versions", "Playground", "Agent versions", "AI Gateway"}

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
    replay_seed: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    seed = _replay(folder, study, env)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dhns_search", "ui", "--tracking-uri", tracking, "--port", str(port)],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    running = Ui(process, port, tracking, study.summary.experiment_id, seed)
    ready: queue.Queue = queue.Queue()
    threading.Thread(target=_read, args=(process.stdout, running.lines, ready), daemon=True).start()
    try:
        assert ready.get(timeout=START_TIMEOUT), "\n".join(running.lines)
        yield running
    finally:
        if process.poll() is None:  # a test failed before the SIGTERM test: stop everything it started
            for pid in _session_members(process.pid):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def _replay(folder: Path, study, env: dict[str, str]) -> str:
    """Export the study's best trial and replay it with ``dhns-search train`` (the real trainer), which logs
    the replay run under the trial's run; returns the replay's seed."""
    export = folder / "best.yaml"
    for args in (["export", study.name, "--storage", study.storage, "--out", str(export)],
                 ["train", "--config", str(export), "--out", str(folder / "replay"), "--tracking-uri", study.tracking]):
        done = subprocess.run([sys.executable, "-m", "dhns_search", *args], check=False, cwd=folder, env=env,
                              capture_output=True, text=True, timeout=REPLAY_TIMEOUT)
        assert done.returncode == 0, done.stdout + done.stderr
    return next(line.split(":", 1)[1].strip() for line in export.read_text().splitlines() if line.startswith("seed:"))


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def _context(browser):
    """A browser context of its own: a new profile, as a researcher's browser that never opened MLflow."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT)
    return context


@pytest.fixture(scope="module")
def page(browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = _context(browser)
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


def _model_training(page, where: str) -> list[str]:
    """Assert that ``page`` shows MLflow's model-training pages, not its GenAI ones; returns the sidebar's
    entries."""
    side = page.locator("aside, nav").first
    side.wait_for()
    items = [line.strip() for line in side.inner_text().split("\n") if line.strip()]
    assert "Model training" in items and not GENAI_ONLY & set(items), (where, items)
    assert page.evaluate("window.localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"', where
    return items


def _new_page(page, click):
    """The tab that ``click()`` opens (MLflow opens a description's links in a new tab)."""
    with page.context.expect_page() as opened:
        click()
    tab = opened.value
    tab.set_default_timeout(PAGE_TIMEOUT)
    return tab


def _blob_frame(page):
    """The frame of MLflow's artifact preview of an HTML file."""
    deadline = time.monotonic() + PAGE_TIMEOUT / 1000
    while not any(f.url.startswith("blob:") for f in page.frames) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    return next(f for f in page.frames if f.url.startswith("blob:"))


#: a chart card of the runs page: the nearest block around a title that holds a chart
_CARD = "xpath=ancestor::*[.//*[contains(@class,'js-plotly-plot')] or .//canvas][1]"


def _chart(page, title: str):
    """The chart card titled ``title``, scrolled into view (MLflow draws a chart only once it is visible)."""
    heading = page.get_by_text(title, exact=True).filter(visible=True).first
    heading.wait_for()
    heading.scroll_into_view_if_needed()
    card = heading.locator(_CARD)
    card.locator(".js-plotly-plot, canvas").first.wait_for()
    page.wait_for_timeout(300)
    return card


def _drawn_points(card, least: int) -> int:
    """Plotly's markers in ``card`` once there are at least ``least`` (0 if they never come)."""
    points = card.locator(".scatterlayer .point")
    deadline = time.monotonic() + 20
    while points.count() < least and time.monotonic() < deadline:
        card.page.wait_for_timeout(200)
    return points.count()


def _runs(ui: Ui) -> dict:
    client = MlflowClient(ui.tracking)
    out = {}
    for run in client.search_runs([ui.experiment_id]):
        out[run.data.tags.get("dhns.trial_number", "parent")] = run.info.run_id
    return out


def test_the_printed_link_shows_the_trials_sorted_by_the_objective(ui, page):
    link = ui.link("dhns-leaderboard")
    assert link.startswith(f"{ui.base}/#/experiments/{ui.experiment_id}/runs?")
    page.goto(link)
    page.get_by_text("trial-0003").first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / "leaderboard.png"))
    _model_training(page, "leaderboard")
    headers = [h.strip() for h in page.locator("[role=columnheader]").all_inner_texts()]
    for column in ("objective", "train.lr", "model.scorer", "model.gamma", "dhns.state"):
        assert column in headers, (column, headers)
    body = page.inner_text("body")
    assert "Sort: objective" in body and "Comparison test space" in body  # sorted; the space's description
    assert "No data available" not in body  # not the GenAI overview
    rows = _rows(page)
    names = [name for name, _ in rows]
    assert f"trial-{BEST:04d} replay (seed {ui.replay_seed})" in names, names
    trials = [name for name in names if "replay" not in name]
    assert trials[:2] == [f"trial-{BEST:04d}", "trial-0000"], names  # the best trial first
    icon = dict(rows)
    assert icon["trial-0001 (pruned)"] == icon["trial-0000"] != icon["trial-0002 (failed)"]  # the state in the name
    assert "PRUNED" in body and "FAIL" in body
    # the first screen, without scrolling, tells the pruned trial from the completed ones: its name and its state
    screen = page.viewport_size
    for name, state in (("trial-0000", "COMPLETE"), ("trial-0001 (pruned)", "PRUNED"), ("trial-0003", "COMPLETE")):
        cell = page.locator('[role=gridcell][col-id="attributes.`Run Name`"]', has_text=name).first
        index = cell.locator("xpath=ancestor::*[@role='row'][1]").get_attribute("row-index")
        shown = page.locator(f'[role=row][row-index="{index}"] [col-id="tags.`dhns.state`"]').first
        assert shown.inner_text().strip() == state, name
        for box in (cell.bounding_box(), shown.bounding_box()):
            assert box and box["x"] + box["width"] <= screen["width"] and box["y"] + box["height"] <= screen["height"], \
                (name, box)


def test_the_comparison_link_opens_on_charts_of_the_trials(ui, page):
    link = ui.link("dhns-compare")
    assert link.startswith(f"{ui.base}/#/experiments/{ui.experiment_id}/runs?") and "compareRunsMode=CHART" in link
    page.goto(link)
    page.get_by_text("Objective against the searched parameters").first.wait_for()
    _model_training(page, "comparison charts")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SCREENSHOTS / "comparison-charts.png"))
    # the objective against each searched parameter: a marker per run that has the parameter and an objective
    # (trials 0 and 3 and the replay; model.gamma, conditional, only the pruned trial, whose objective is NaN)
    for param, least in (("train.lr", 3), ("model.scorer", 3), ("model.gamma", 0)):
        card = _chart(page, f"{param} vs. objective")
        card.locator(".js-plotly-plot .main-svg").first.wait_for()
        assert _drawn_points(card, least) >= least, param
        assert param in card.inner_text() and "No data" not in card.inner_text()
    card = _chart(page, "Parallel Coordinates")
    text = card.inner_text()
    assert all(axis in text for axis in ("train.lr", "model.scorer", "objective")), text
    drawn = card.locator("canvas.foreground").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }")
    assert drawn > 100, drawn  # the trials' lines on the canvas
    page.get_by_text("Validation curves").first.scroll_into_view_if_needed()
    card = _chart(page, "valid_mrr")
    # three runs have a validation curve (trials 0 and 3 and the replay: 3 epochs each, the pruned trial: 2)
    assert _drawn_points(card, 11) >= 11 and card.locator(".scatterlayer .trace").count() >= 4
    page.screenshot(path=str(SCREENSHOTS / "comparison-curves.png"))


def test_a_pruned_trial_is_finished_and_a_failed_one_failed_on_their_run_pages(ui, page):
    runs = _runs(ui)
    base = f"http://127.0.0.1:{ui.port}/#/experiments/{ui.experiment_id}/runs"
    page.goto(f"{base}/{runs['1']}?workflowType=machine_learning")
    page.get_by_text("About this run").first.wait_for()
    pruned = page.inner_text("body")
    assert "Status\nFinished" in pruned and "Pruned at epoch 2" in pruned
    _model_training(page, "pruned trial")
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


def test_from_the_leaderboard_to_a_trial_and_on_to_its_replay(ui, page):
    page.goto(ui.link("dhns-leaderboard"))
    page.get_by_role("link", name=f"trial-{BEST:04d}", exact=True).first.click()
    page.get_by_text("About this run").first.wait_for()
    page.get_by_text("Replays").first.wait_for()
    _model_training(page, "trial")
    assert f"/runs/{_runs(ui)[str(BEST)]}" in page.url
    page.screenshot(path=str(SCREENSHOTS / "trial.png"))
    name = f"trial-{BEST:04d} replay (seed {ui.replay_seed})"
    replay = _new_page(page, lambda: page.get_by_role("link", name=name).first.click())
    try:
        replay.get_by_text("About this run").first.wait_for()
        replay.get_by_text(f"Replay of trial {BEST}").first.wait_for()
        _model_training(replay, "replay")
        # the parent run's name loads after the page ("Parent run name loading"): wait for its link
        replay.get_by_role("link", name=f"trial-{BEST:04d}", exact=True).first.wait_for()
        body = replay.inner_text("body")
        assert name in body and "Parent run" in body and f"trial-{BEST:04d}" in body.split("Parent run", 1)[1]
        replay.screenshot(path=str(SCREENSHOTS / "replay.png"))
    finally:
        replay.close()


def test_from_the_leaderboard_to_the_study_run_and_its_interactive_plots(ui, page):
    page.goto(ui.link("dhns-leaderboard"))
    study_run = page.locator('[role=gridcell][col-id="attributes.`Run Name`"]', has_text="compare")
    study_run.get_by_role("link", name="compare", exact=True).first.click()
    plots = page.get_by_role("link", name="every interactive plot on one page")
    plots.wait_for()
    _model_training(page, "study run")
    assert f"/runs/{_runs(ui)['parent']}" in page.url
    page.screenshot(path=str(SCREENSHOTS / "study-run.png"))
    tab = _new_page(page, plots.click)
    try:
        assert tab.url.endswith("/artifacts/plots/interactive.html"), tab.url
        frame = _blob_frame(tab)
        frame.get_by_text("valid mrr (realistic)").first.wait_for()  # drawn by plotly, the axis named
        for name in ("optimization_history", "intermediate_values", "param_importances", "parallel_coordinate"):
            frame.locator(f"#{name} .js-plotly-plot .main-svg").first.wait_for()
        _model_training(tab, "interactive plots")
        for name in ("optimization_history", "intermediate_values", "parallel_coordinate", "param_importances"):
            tab.get_by_text(f"{name}.png", exact=True).first.wait_for()  # the same plots as PNGs beside it
        tab.screenshot(path=str(SCREENSHOTS / "interactive-plots.png"))
    finally:
        tab.close()


def test_two_runs_selected_and_compared(ui, page):
    page.goto(ui.link("dhns-leaderboard"))
    page.get_by_text("trial-0003").first.wait_for()
    for name in (f"trial-{BEST:04d}", "trial-0000"):
        cell = page.locator('[role=gridcell][col-id="attributes.`Run Name`"]', has_text=name)
        row = cell.filter(has_not_text="replay").first.locator("xpath=ancestor::*[@role='row'][1]")
        row.get_by_role("checkbox").first.check()
    page.get_by_role("button", name="Compare").first.click()
    page.get_by_text("Parameters").first.wait_for()
    page.wait_for_timeout(500)
    assert "/compare-runs" in page.url, page.url
    _model_training(page, "compare runs")
    body = page.inner_text("body")
    assert f"trial-{BEST:04d}" in body and "trial-0000" in body and "train.lr" in body
    page.screenshot(path=str(SCREENSHOTS / "compare-runs.png"))


def test_the_bare_server_url_opens_the_model_training_pages(ui, browser):
    context = _context(browser)  # a first visit: the defaults of the UI's page, nothing chosen before
    try:
        home = context.new_page()
        home.goto(ui.base)
        study = home.get_by_role("link", name="compare", exact=True).first  # under Recent Experiments
        study.wait_for()
        _model_training(home, "home")
        home.wait_for_timeout(1000)
        assert not home.get_by_text("Ask questions about your experiments").is_visible()  # the Assistant stays shut
        home.screenshot(path=str(SCREENSHOTS / "home.png"))
        study.click()
        home.locator('[role=gridcell][col-id="attributes.`Run Name`"]', has_text="compare").first.wait_for()
        assert "Runs" in _model_training(home, "experiment from home")
        home.screenshot(path=str(SCREENSHOTS / "experiment-from-home.png"))
    finally:
        context.close()


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
