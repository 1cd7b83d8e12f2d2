"""The MLflow tracking store, checked before anything is written to it: :func:`open_store` (light: mlflow is
imported only once a store is opened).

- ``none`` (or empty): tracking off;
- ``sqlite:///PATH.db``: the folder and the file must be writable and the file a SQLite database of MLflow
  (or new); the store is created and migrated once, under a file lock next to it, so that workers started
  together never race MLflow's alembic migrations;
- ``http(s)://HOST:PORT``: the server must answer ``/health`` within :data:`HEALTH_TIMEOUT` seconds;
- ``postgresql://``, ``mysql://``, ``mssql://`` (MLflow's database stores): opened once, errors reported.

Anything else is refused.  Every problem is one :class:`~dhns_search.errors.TrackingError` (exit code 2)
that names the URI and the cause.  A dead server is reported in seconds: MLflow's own HTTP retries are cut
to :data:`HTTP_RETRIES` with a short back-off (environment defaults, which the user may override).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from dhns_search.errors import TrackingError
from dhns_search.files import file_lock, sqlite_path

__all__ = ["DEFAULT_TRACKING_URI", "HEALTH_TIMEOUT", "HTTP_RETRIES", "TRACKING_HELP", "is_store_failure",
           "open_store"]

#: the MLflow store of ``dhns-search run``, ``train`` (of an export) and ``ui`` (artifacts under
#: ``mlruns/artifacts``)
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"

HEALTH_TIMEOUT = 5.0
HTTP_RETRIES = 2
TRACKING_HELP = "use sqlite:///PATH.db, http://HOST:PORT (an mlflow server), a database URL, or none"
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_checked: set[str] = set()

# MLflow retries a failing request 7 times with a doubling back-off (about two minutes) by default.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")  # an int for MLflow
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def open_store(uri: str) -> str:
    """Check ``uri`` (see the module docstring) and create or migrate a SQLite store; returns ``uri``.
    Done once per process and URI."""
    path = sqlite_path(uri)
    key = str(path.resolve()) if path is not None else uri  # a relative path depends on the working directory
    if key in _checked:
        return uri
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if path is not None:
        _check_sqlite(uri, path)
        with file_lock(path):  # one process creates or migrates the store; the others wait, then find it
            _first_contact(uri)
    elif scheme in ("http", "https"):
        _check_server(uri)
    elif scheme in _DATABASE_SCHEMES:
        _first_contact(uri)
    else:
        raise TrackingError(f"tracking URI {uri!r}: unsupported scheme {scheme or '(none)'!r}; {TRACKING_HELP}")
    _checked.add(key)
    return uri


def is_store_failure(err: BaseException) -> bool:
    """Whether ``err`` comes from the tracking store (an MLflow error, a failed HTTP request)."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    return isinstance(err, (MlflowException, RequestException))


def _check_sqlite(uri: str, path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(f"tracking URI {uri}: cannot create {folder} ({err.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"tracking URI {uri}: the folder {folder} is not writable (SQLite writes its journal "
                            "next to the database)")
    if path.is_dir():
        raise TrackingError(f"tracking URI {uri}: {path} is a folder, not a database file")
    if not path.exists():
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise TrackingError(f"tracking URI {uri}: {path} is not writable; fix its permissions or give another "
                            "--tracking-uri")
    with path.open("rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:
        raise TrackingError(f"tracking URI {uri}: {path} is not a SQLite database")
    if head:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as err:
            raise TrackingError(f"tracking URI {uri}: {path}: sqlite: {err}") from None
        if tables and "experiments" not in tables:
            raise TrackingError(f"tracking URI {uri}: {path} is a SQLite database but not an MLflow store (its "
                                f"tables: {', '.join(sorted(tables)[:6])})")


def _check_server(uri: str) -> None:
    import requests

    url = uri.rstrip("/") + "/health"
    try:
        answer = requests.get(url, timeout=HEALTH_TIMEOUT)
    except requests.RequestException as err:
        cause = type(err).__name__ + (": timed out" if isinstance(err, requests.Timeout) else "")
        raise TrackingError(f"tracking server {uri} does not answer ({cause} after at most {HEALTH_TIMEOUT:g} s); "
                            "start it (mlflow server --host HOST --port PORT ...) or check --tracking-uri") from None
    if answer.status_code != 200:
        raise TrackingError(f"tracking server {uri}: {url} answered HTTP {answer.status_code}; is it an MLflow "
                            "tracking server?")


def _first_contact(uri: str) -> None:
    """Open the store once (a SQLite or database store is created and migrated here)."""
    import logging

    from mlflow.tracking import MlflowClient

    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - permissions, a corrupt file, a server or driver error
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise TrackingError(f"tracking URI {uri}: the store cannot be opened ({type(err).__name__}: {first})") from None
