"""Storage and tracking URLs: the project's defaults, SQLite file paths, and URLs safe to print (the
tracking store's default is :data:`dhns_search.tracking.store.DEFAULT_TRACKING_URI`).

Light on purpose (no optuna, no mlflow), so the command line can show these defaults without loading
either.
"""

from __future__ import annotations

from pathlib import Path

from dhns_search.files import sqlite_path
from dhns_search.tracking.store import DEFAULT_TRACKING_URI

__all__ = [
    "DEFAULT_STUDIES_DB",
    "DEFAULT_STUDIES_DIR",
    "DEFAULT_TRACKING_URI",
    "default_journal",
    "default_storage",
    "display_url",
    "journal_path",
    "sqlite_path",
    "sqlite_url",
]

#: where ``dhns-search run`` keeps its studies by default: one SQLite file for all of them (optuna-dashboard
#: shows them side by side); ``studies/<study>.db`` files of earlier versions are still read and continued
DEFAULT_STUDIES_DIR = Path("studies")
DEFAULT_STUDIES_DB = "studies.db"

_SQLITE = "sqlite:///"
#: a journal file (Optuna's JournalStorage): ``journal:PATH``, for several workers on one machine or a
#: shared filesystem
JOURNAL = "journal:"


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:PATH`` URL; None for other URLs."""
    if url.startswith(JOURNAL) and url[len(JOURNAL) :].strip():
        return Path(url[len(JOURNAL) :].removeprefix("//"))
    return None


def default_journal(study: str, root: Path = DEFAULT_STUDIES_DIR) -> str:
    """``journal:studies/<study>.journal``: the default storage of ``run --workers N`` (N > 1)."""
    return f"{JOURNAL}{(root / f'{study}.journal').as_posix()}"


def sqlite_url(path: Path) -> str:
    """``sqlite:///PATH`` for a database file (relative paths stay relative to the working directory)."""
    return f"{_SQLITE}{path.as_posix()}"


def default_storage(study: str | None = None, root: Path = DEFAULT_STUDIES_DIR) -> str:
    """``sqlite:///studies/studies.db`` (relative to the working directory), or the study's own file
    ``studies/<study>.db`` where an earlier version made one."""
    if study is not None and (root / f"{study}.db").is_file():
        return sqlite_url(root / f"{study}.db")
    return sqlite_url(root / DEFAULT_STUDIES_DB)


def display_url(url: str) -> str:
    """A storage URL with its password hidden (safe to print and to store as a tag)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL
        return url
