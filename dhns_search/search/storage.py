"""Where studies live: Optuna storages for any URL, finding and opening studies by name.

Without ``--storage`` a study is kept in ``studies/studies.db`` (one SQLite file for all studies), and
every command also looks in the other ``studies/*.db`` (the per-study files of earlier versions).  URLs are printed with their password hidden (:func:`~dhns_search.search.urls.display_url`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import optuna

from dhns_search.errors import ConfigError, StudyError
from dhns_search.search.urls import DEFAULT_STUDIES_DIR, default_storage, display_url, sqlite_path, sqlite_url

__all__ = ["check_study_name", "dashboard_command", "known_studies", "make_storage", "open_study"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SQL_URL = re.compile(r"^(sqlite|postgresql|mysql|oracle|mssql)(\+\w+)?://")


def check_study_name(name: str) -> str:
    """``name`` if it can name a study (and its files); :class:`ConfigError` otherwise."""
    if not _NAME.match(name):
        raise ConfigError(f"study name {name!r}: use letters, digits, '.', '_' and '-' (it names files)")
    return name


def make_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for any URL.  SQL databases get heartbeats, so that trials of a crashed
    process are marked FAIL by the next run instead of staying RUNNING forever.

    ``create=False`` (reading: status, export) refuses a SQLite file that does not exist, rather than
    leaving an empty database behind."""
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.is_file():
            raise StudyError(f"storage {display_url(url)}: no such database file {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
    if _SQL_URL.match(url):
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs = {"connect_args": {"timeout": 60}}  # several workers may share one file
        else:
            kwargs = {"pool_pre_ping": True}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60,
                                                  grace_period=180)
        except Exception as err:  # noqa: BLE001 - driver missing, server down, bad URL ...
            raise StudyError(f"storage {display_url(url)}: {type(err).__name__}: {err}") from None
    raise StudyError(
        f"storage {display_url(url)}: not a supported URL; use sqlite:///PATH.db or a database URL such as "
        "postgresql+psycopg://USER@HOST:5432/DB"
    )


def _sqlite_files(root: Path = DEFAULT_STUDIES_DIR) -> list[Path]:
    return sorted(root.glob("*.db")) if root.is_dir() else []


def _names_in(url: str) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.study.get_all_study_names(storage=make_storage(url, create=False))
    except Exception:  # noqa: BLE001 - not an Optuna database, or unreachable
        return []


def known_studies(storage: str | None) -> list[tuple[str, str]]:
    """``(study name, storage URL)`` of every study in ``storage``, or (None) in every ``studies/*.db``."""
    if storage is not None:
        return [(n, storage) for n in _names_in(storage)]
    out = []
    for path in _sqlite_files():
        url = sqlite_url(path)
        out += [(n, url) for n in _names_in(url)]
    return out


def open_study(name: str, storage: str | None = None) -> tuple[optuna.Study, str]:
    """Load an existing study: from ``storage``, else its default storage (``studies/<name>.db`` where that
    exists, else ``studies/studies.db``), else any ``studies/*.db``.

    Returns the study and its storage URL; raises :class:`StudyError` naming the known studies when there
    is none of that name.
    """
    candidates = [storage] if storage else []
    if storage is None:
        default = default_storage(name)
        if sqlite_path(default).is_file():  # type: ignore[union-attr]
            candidates.append(default)
        candidates += [u for n, u in known_studies(None) if n == name and u not in candidates]
    for url in candidates:
        if name in _names_in(url):
            return optuna.load_study(study_name=name, storage=make_storage(url, create=False)), url
    known = known_studies(storage)
    where = display_url(storage) if storage else f"{DEFAULT_STUDIES_DIR}/*.db"
    listing = ", ".join(f"{n} ({display_url(u)})" if storage is None else n for n, u in known) or "none"
    raise StudyError(f"no study {name!r} in {where}; known studies: {listing}")


def dashboard_command(storage: str) -> str:
    """How to open optuna-dashboard on a study's storage (it is an optional extra)."""
    return f"optuna-dashboard {display_url(storage)}"
