"""Where studies live: Optuna storages for any URL, finding and opening studies by name.

Without ``--storage`` a study is kept in ``studies/studies.db`` (one SQLite file for all studies), and
every command also looks in the other ``studies/*.db`` (the per-study files of earlier versions).  URLs are printed with their password hidden (:func:`~dhns_search.search.urls.display_url`).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from dhns_search.errors import ConfigError, StudyError
from dhns_search.search.locks import file_lock
from dhns_search.search.recovery import retry_callback
from dhns_search.search.urls import (
    DEFAULT_STUDIES_DIR,
    default_storage,
    display_url,
    journal_path,
    sqlite_path,
    sqlite_url,
)

__all__ = ["STORAGE_HELP", "check_study_name", "create_or_load", "dashboard_command", "known_studies",
           "make_storage", "open_study"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SQL_URL = re.compile(r"^(sqlite|postgresql|mysql|oracle|mssql)(\+\w+)?://")


#: the longest study name: it names files (``studies/<study>.journal``, lock files, the work folder
#: ``<study>-<uid8>``, exports ``<study>-trial<N>.yaml``), and a file name has at most 255 bytes
MAX_STUDY_NAME = 100


def check_study_name(name: str, option: str = "--study") -> str:
    """``name`` if it can name a study (and its files); :class:`ConfigError` otherwise."""
    if not name.strip():
        raise ConfigError(f"{option}: empty; give a study name (letters, digits, '.', '_' and '-')")
    if len(name) > MAX_STUDY_NAME:
        raise ConfigError(f"{option}: the study name has {len(name)} characters; at most {MAX_STUDY_NAME} "
                          "(it names files)")
    if not _NAME.match(name):
        raise ConfigError(f"study name {name!r}: use letters, digits, '.', '_' and '-' (it names files)")
    return name


#: heartbeats of a database storage: a trial whose worker has not beaten for GRACE_SECONDS is failed and
#: retried by the next worker that starts a trial (a dead process on this machine is found at once, see
#: :mod:`dhns_search.search.recovery`)
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
_SQLITE_MAGIC = b"SQLite format 3\x00"


def make_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for any URL (see :data:`STORAGE_HELP`).

    Database storages get heartbeats and retry a trial whose worker died (Optuna's
    ``RetryHeartbeatStaleTrialCallback``, the intermediate values inherited); journal storages have no
    heartbeat, :mod:`~dhns_search.search.recovery` sweeps their dead trials instead.  ``create=False``
    (reading: status, export) refuses a file that does not exist, rather than leaving an empty one behind.
    A SQLite file that another program locks, or that is not an Optuna database, is refused with one
    message; creating a SQLite database happens under a file lock (processes started together).
    """
    journal = journal_path(url)
    if journal is not None:
        return _journal_file(url, journal, create)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _journal_redis(url)
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite(url, path, create)
    if not _SQL_URL.match(url):
        raise StudyError(f"storage {display_url(url)}: not a supported URL; {STORAGE_HELP}")
    if path is not None:
        with file_lock(path):  # several processes creating the tables together would collide
            return _rdb(url, {"connect_args": {"timeout": 60}})
    for attempt in range(3):  # workers started together on a new database may race its tables
        try:
            return _rdb(url, {"pool_pre_ping": True})
        except StudyError:
            if attempt == 2:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


STORAGE_HELP = ("use sqlite:///PATH.db (one process), journal:PATH (several workers on this machine or a "
                "shared filesystem), redis://HOST:6379/0, or a database URL such as "
                "postgresql+psycopg://USER@HOST:5432/DB")


def _rdb(url: str, kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=retry_callback())
    except Exception as err:  # noqa: BLE001 - driver missing, server down, bad URL ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise StudyError(f"storage {display_url(url)}: {type(err).__name__}: {first}") from None


def _existing_file(shown: str, path: Path, create: bool, kind: str) -> bool:
    """Whether the storage file exists; a folder, or a missing file when not creating, is refused (a
    missing file to create gets its parent folder)."""
    if path.is_dir():
        raise StudyError(f"storage {shown}: {path} is a folder, not a {kind}")
    if path.exists():
        return True
    if not create:
        raise StudyError(f"storage {shown}: no such {kind} {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return False


def _journal_file(url: str, path: Path, create: bool) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    if _existing_file(url, path, create, "journal file") and path.stat().st_size and path.read_bytes()[:1] != b"{":
        raise StudyError(f"storage {url}: {path} is not an Optuna journal file (it does not hold JSON lines)")
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as err:  # noqa: BLE001 - unreadable, unwritable, corrupt
        raise StudyError(f"storage {url}: {type(err).__name__}: {err}") from None


def _journal_redis(url: str) -> optuna.storages.JournalStorage:
    try:
        import redis
        from optuna.storages.journal import JournalRedisBackend
    except ImportError:
        raise StudyError(f"storage {display_url(url)}: the redis package is missing (pip install redis, or "
                         "install dhns-search with its redis extra)") from None
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.JournalStorage(JournalRedisBackend(url))
    except Exception as err:  # noqa: BLE001 - server down, bad URL
        raise StudyError(f"storage {display_url(url)}: {type(err).__name__}: {err}") from None


def _check_sqlite(url: str, path: Path, create: bool) -> None:
    """Refuse a missing (when reading), foreign, unreadable or locked SQLite file with one message."""
    shown = display_url(url)
    if not _existing_file(shown, path, create, "database file"):
        return
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as err:
        raise StudyError(f"storage {shown}: cannot read {path} ({err.strerror})") from None
    if not head:
        return  # an empty file: SQLite makes it a database
    if head != _SQLITE_MAGIC:
        raise StudyError(f"storage {shown}: {path} is not a SQLite database (not an Optuna storage); "
                         "give another --storage path")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as err:
        if "locked" in str(err):
            raise StudyError(f"storage {shown}: {path} is locked by another program (sqlite: {err}); close "
                             "it (a database browser, another tool) and run again") from None
        raise StudyError(f"storage {shown}: {path}: sqlite: {err}") from None
    except sqlite3.DatabaseError as err:
        raise StudyError(f"storage {shown}: {path} is not a readable SQLite database ({err})") from None
    if tables and not {"studies", "trials", "version_info"} <= tables:
        listing = ", ".join(sorted(tables)[:6])
        raise StudyError(f"storage {shown}: {path} is a SQLite database but not an Optuna storage (its tables: "
                         f"{listing}); give another --storage path")


def _local_stores(root: Path = DEFAULT_STUDIES_DIR) -> list[str]:
    """The storage URLs of ``studies/*.db`` and ``studies/*.journal``."""
    if not root.is_dir():
        return []
    return [sqlite_url(p) for p in sorted(root.glob("*.db"))] + \
        [f"journal:{p.as_posix()}" for p in sorted(root.glob("*.journal"))]


def _names_in(url: str, *, strict: bool = False, unreadable: list[str] | None = None) -> list[str]:
    """The study names in ``url``; ``strict``: a storage that cannot be read is an error (else: none, and
    the reason is added to ``unreadable``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.study.get_all_study_names(storage=make_storage(url, create=False))
    except StudyError as err:
        if strict:
            raise
        reason = str(err)
    except Exception as err:  # noqa: BLE001 - not an Optuna database, or unreachable
        reason = f"storage {display_url(url)}: {type(err).__name__}: {err}"
        if strict:
            raise StudyError(reason) from None
    if unreadable is not None and reason not in unreadable:
        unreadable.append(reason)
    return []


def known_studies(storage: str | None, unreadable: list[str] | None = None) -> list[tuple[str, str]]:
    """``(study name, storage URL)`` of every study in ``storage``, or (None) in every ``studies/*.db`` and
    ``studies/*.journal`` (those that cannot be read, say a file another program locks, are skipped and
    their reasons added to ``unreadable``)."""
    if storage is not None:
        return [(n, storage) for n in _names_in(storage, strict=True)]
    return [(n, url) for url in _local_stores() for n in _names_in(url, unreadable=unreadable)]


def create_or_load(name: str, storage: optuna.storages.BaseStorage, directions: list[str]) -> optuna.Study:
    """Load the study ``name``, or create it: a worker that loses the race to create it loads it."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        pass
    try:
        return optuna.create_study(study_name=name, storage=storage, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it meanwhile
        return optuna.load_study(study_name=name, storage=storage)


def open_study(name: str, storage: str | None = None) -> tuple[optuna.Study, str]:
    """Load an existing study: from ``storage``, else its default storage (``studies/<name>.db`` where that
    exists, else ``studies/studies.db``), else any ``studies/*.db``.

    Returns the study and its storage URL; raises :class:`StudyError` naming the known studies when there
    is none of that name.
    """
    if not name.strip():
        raise StudyError("the study name is empty; give one (dhns-search status lists the studies)")
    if storage is not None and not storage.strip():
        raise StudyError("--storage: empty; give a storage URL, or leave --storage out for studies/*.db")
    candidates = [storage] if storage else []
    unreadable: list[str] = []
    if storage is None:
        default = default_storage(name)
        if sqlite_path(default).is_file():  # type: ignore[union-attr]
            candidates.append(default)
        candidates += [u for n, u in known_studies(None, unreadable) if n == name and u not in candidates]
    for url in candidates:
        if name in _names_in(url, strict=url == storage, unreadable=unreadable):
            return optuna.load_study(study_name=name, storage=make_storage(url, create=False)), url
    if unreadable:  # the study may well be there: say why it could not be looked at, not that it is missing
        raise StudyError(f"study {name!r}: {unreadable[0]}")
    known = known_studies(storage)
    where = display_url(storage) if storage else f"{DEFAULT_STUDIES_DIR}/*.db and *.journal"
    listing = ", ".join(f"{n} ({display_url(u)})" if storage is None else n for n, u in known) or "none"
    raise StudyError(f"no study {name!r} in {where}; known studies: {listing}")


def dashboard_command(storage: str) -> str:
    """How to open optuna-dashboard on a study's storage (it is an optional extra)."""
    return f"optuna-dashboard {display_url(storage)}"
