"""The Typer application, the shared consoles and the error boundary of every command.

Command modules register their commands on :data:`app` where they define them; ``dhns_search.cli``
imports them all, so ``from dhns_search.cli import app`` has every command.  Keep this module and the
command modules' top-level imports light (no torch, optuna or mlflow): ``--help`` must answer at once,
so heavy libraries are imported inside the command functions that use them.
"""

from __future__ import annotations

import errno
import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from dhns_search import __version__
from dhns_search.errors import DhnsError, DhnsWarning

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="dhns-search",
    help="Hyperparameter search for DHNS (diffusion-based hierarchical negative sampling) on "
    "multimodal knowledge graphs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable)


def cli_errors(func: F) -> F:
    """Turn :class:`DhnsError` into one readable message and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default", DhnsWarning)  # each distinct warning once
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except DhnsError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except OSError as err:
            if err.errno not in _FILESYSTEM_ERRORS:
                raise
            # a write path without its own message (a plot, a report, generated data): the file and the cause
            where = f"{err.filename}: " if err.filename else ""
            err_console.print(f"[bold red]error:[/] {escape(where + (err.strerror or str(err)))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


#: errors of the filesystem that the user fixes (space, permissions, names), not bugs
_FILESYSTEM_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
                      errno.ENOTDIR, errno.EISDIR, errno.EIO}


def path_value(value: Any) -> Path:
    """The ``parser`` of every path option and argument: an empty string is refused (``Path("")`` would be
    the working directory, and ``--out ''`` would silently mean ``.``)."""
    if isinstance(value, Path):  # a default
        return value
    if not str(value).strip():
        raise typer.BadParameter("empty; give a path")
    return Path(value)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (:class:`DhnsWarning`) as one ``warning:`` line on stderr; others as Python shows them."""
    if issubclass(category, DhnsWarning):
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def _version(value: bool) -> None:
    if value:
        console.print(f"dhns-search {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """dhns-search command line."""


def echo_err(msg: str) -> None:
    err_console.print(msg, highlight=False)
    sys.stderr.flush()
