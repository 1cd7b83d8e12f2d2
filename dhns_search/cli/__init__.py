"""The ``dhns-search`` command line.  Commands parse options and call one library function each."""

from __future__ import annotations

from dhns_search.cli._app import app


def main() -> None:
    # Importing the command modules registers their commands on ``app``.
    from dhns_search.cli import compare as _compare  # noqa: F401
    from dhns_search.cli import data as _data  # noqa: F401
    from dhns_search.cli import search as _search  # noqa: F401
    from dhns_search.cli import train as _train  # noqa: F401

    app()


__all__ = ["app", "main"]
