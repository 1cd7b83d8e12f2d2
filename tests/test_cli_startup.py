"""The command line starts without torch, optuna or mlflow: ``--help`` of every command answers at once.

Checked on the imports, not on a clock (the time is printed for the record): each command module imports
heavy libraries inside the command function that needs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dhns_search

ROOT = Path(dhns_search.__file__).resolve().parents[1]
HEAVY = ("torch", "optuna", "mlflow")

#: runs the CLI as ``python -m dhns_search ARGS`` does (ARGS: a JSON list in argv[1]), then reports
#: which of the modules named in argv[2] were imported
PROBE = """
import json, runpy, sys
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["dhns-search", *args]
try:
    runpy.run_module("dhns_search", run_name="__main__")
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print(json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}))
"""

#: imports the command line, then reports the heavy modules imported and the commands of ``app``
IMPORT = """
import json, sys
from dhns_search.cli import app
print(json.dumps({"heavy": [m for m in json.loads(sys.argv[1]) if m in sys.modules],
                  "commands": [c.name for c in app.registered_commands],
                  "groups": [g.name for g in app.registered_groups]}))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
                          check=False)


def test_importing_the_cli_loads_no_heavy_library_and_gives_every_command():
    done = _python("-c", IMPORT, json.dumps(HEAVY))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["heavy"] == []
    assert seen["commands"] == ["run", "worker", "status", "export", "ui", "train", "compare"]
    assert seen["groups"] == ["data", "features", "spaces"]


@pytest.mark.parametrize("args", [[], ["run"], ["worker"], ["status"], ["export"], ["ui"], ["train"], ["compare"], ["data", "synth"],
                                  ["features", "text"], ["spaces", "show"]])
def test_help_loads_no_heavy_library(args):
    t0 = time.perf_counter()
    done = _python("-c", PROBE, json.dumps([*args, "--help"]), json.dumps(HEAVY))
    print(f"dhns-search {' '.join(args)} --help: {time.perf_counter() - t0:.2f} s")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, None) and result["heavy"] == []
    assert "Usage:" in done.stdout


def test_python_m_dhns_search_help_lists_the_commands():
    t0 = time.perf_counter()
    done = _python("-m", "dhns_search", "--help")
    print(f"python -m dhns_search --help: {time.perf_counter() - t0:.2f} s")
    assert done.returncode == 0, done.stderr
    for command in ("run", "worker", "status", "export", "ui", "train", "data", "features", "spaces"):
        assert f" {command} " in done.stdout
