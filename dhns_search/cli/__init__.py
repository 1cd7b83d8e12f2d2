"""The ``dhns-search`` command line.  Each command parses its options and calls one library function.

One module per command (or group); each registers its commands on :data:`app` where it defines them,
and importing this package imports them all, so ``from dhns_search.cli import app`` has every command.
The order of the imports is the order of ``--help``.
"""

from __future__ import annotations

from dhns_search.cli._app import app

# The commands, in the order of --help.
# isort: off
from dhns_search.cli import run, status, export, ui, train, compare, data, spaces  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app()
