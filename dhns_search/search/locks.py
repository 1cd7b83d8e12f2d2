"""Locks that let several processes share a study: a file lock next to a file, and the storage's own lock
for the moment a worker takes a trial of the budget (:func:`budget_lock`).

- :func:`file_lock` (from :mod:`dhns_search.files`): ``filelock.FileLock`` on ``.locks/<file>.lock`` next to the
  file (fcntl on POSIX); creating a SQLite database or an MLflow SQLite store, and the one-writer rule of a
  SQLite study;
- :func:`budget_lock`: held while a worker counts the study's trials and takes the next one, so that
  ``--n-trials`` is met exactly however many workers run: a PostgreSQL (or MySQL) session advisory lock
  on a database storage (it spans machines), a Redis lock on a Redis journal, a file lock next to a
  journal or SQLite file.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from filelock import Timeout

from dhns_search.errors import StudyError
from dhns_search.files import file_lock, lock_path

__all__ = ["Timeout", "budget_lock", "file_lock", "lock_path"]


def _key(study: str) -> int:
    """A signed 64-bit advisory-lock key of a study name (stable across processes and machines)."""
    return int.from_bytes(hashlib.sha256(f"dhns-search:{study}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _sql_lock(engine: Any, study: str) -> Iterator[None]:
    """A PostgreSQL session advisory lock (MySQL: GET_LOCK) on its own connection."""
    from sqlalchemy import text

    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _key(study)})
            unlock = ("SELECT pg_advisory_unlock(:k)", {"k": _key(study)})
        elif dialect == "mysql":
            conn.execute(text("SELECT GET_LOCK(:k, -1)"), {"k": f"dhns-{_key(study)}"})
            unlock = ("SELECT RELEASE_LOCK(:k)", {"k": f"dhns-{_key(study)}"})
        else:
            raise StudyError(f"several workers on a {dialect} storage are not supported; use PostgreSQL")
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text(unlock[0]), unlock[1])
            conn.commit()


@contextlib.contextmanager
def budget_lock(url: str, study: str, *, engine: Any = None) -> Iterator[None]:
    """Held while a worker counts the study's trials and starts the next one (see the module docstring).

    ``url`` is the storage URL; ``engine`` the SQLAlchemy engine of a database storage.
    """
    from dhns_search.search.urls import journal_path, sqlite_path

    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        with client.lock(f"dhns-search:budget:{study}", timeout=600, blocking_timeout=600):
            yield
        return
    path = journal_path(url) or sqlite_path(url)
    if path is not None:
        with file_lock(path, suffix=f".{study}.budget"):
            yield
        return
    if engine is not None:
        with _sql_lock(engine, study):
            yield
        return
    yield  # an in-memory storage: one process
