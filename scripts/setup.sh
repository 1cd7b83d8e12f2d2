#!/usr/bin/env bash
# Creates the virtual environment and installs dhns-search with everything the tests need.
# On a CPU-only machine this installs the CPU build of torch (torch==2.13.0) first, so the
# unpinned dependency is already satisfied and no CUDA wheels are pulled.  If a torch is already
# importable in the environment (e.g. a user's CUDA build), it is left alone.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${DHNS_TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "installing $TORCH_SPEC"
    "$PY" -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v '^WARNING: Location' || true
fi
"$PY" -c "import torch" || { echo "torch could not be installed ($TORCH_SPEC)" >&2; exit 1; }
echo "installing dhns-search and its extras"
"$PY" -m pip install -q -e ".[dev,text,postgres,redis]" 2>&1 | grep -v '^WARNING: Location' || true
"$PY" -c "import dhns_search, optuna, mlflow" || { echo "installation failed" >&2; exit 1; }

# The browser check (tests/test_browser_ui.py) drives Debian's Chromium through Playwright; Playwright's
# own browser downloads are not used.  Installed here when missing, where apt and root are available.
CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "installing chromium (for the browser check)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null \
            || { echo "apt-get install chromium failed" >&2; exit 1; }
    else
        echo "WARNING: $CHROMIUM is missing and cannot be installed here (needs apt-get and root):" >&2
        echo "         install Chromium as root (apt-get install chromium), or the browser check is skipped" >&2
        echo "         (and fails under CI=true)." >&2
    fi
fi
echo "ready: $VENV/bin/dhns-search"
