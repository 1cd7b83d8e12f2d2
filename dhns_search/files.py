"""Files shared by processes: atomic writes, file locks, and the database file behind a SQLite URL.

Every writer in the package goes through :func:`atomic_write`, so a reader (another worker, a crashed run's
successor) never sees half a file: the content goes to a temporary file in the same folder (unique per
process and thread, so concurrent writers of one path never share it), is flushed and fsynced, then
renamed over the target, which POSIX makes atomic.  :func:`file_lock` is a lock file next to a file
(``.locks/<name>.lock``): creating a SQLite database or an MLflow store, one writer of a SQLite study.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from dhns_search.errors import WriteError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "file_lock", "lock_path", "os_error",
           "sqlite_path"]

_SQLITE = "sqlite:///"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a binary temporary file beside ``path``, then rename it onto ``path``.

    Parent folders are created.  On any error the temporary file is removed and ``path`` is untouched.
    An error of the filesystem (no space left, read-only, name too long, a path through a file; also
    when ``torch.save`` reports it as a ``RuntimeError`` caused by one) raises
    :class:`~dhns_search.errors.WriteError` naming ``path`` and the cause.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        cause = os_error(err)
        if cause is None:
            raise
        raise WriteError(path, cause.strerror or str(cause)) from None
    return path


def os_error(err: BaseException) -> OSError | None:
    """The :class:`OSError` of the filesystem behind ``err`` (itself, or what it was raised from), if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def lock_path(path: str | Path, suffix: str = "") -> Path:
    """``.locks/<name><suffix>.lock`` in the folder of ``path`` (out of the way of the files there)."""
    path = Path(path)
    return path.parent / ".locks" / f"{path.name}{suffix}.lock"


def file_lock(path: str | Path, *, suffix: str = "", timeout: float = -1) -> FileLock:
    """A file lock on :func:`lock_path` (``timeout`` -1: wait as long as it takes; 0: try once)."""
    target = lock_path(path, suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target), timeout=timeout)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL; None for other URLs and in-memory databases."""
    if url.startswith(_SQLITE):
        rest = url[len(_SQLITE) :]
        return Path(rest) if rest and rest != ":memory:" else None
    return None
