"""Atomic file writes: a reader (another worker, a crashed run's successor) never sees half a file.

Every writer in the package goes through :func:`atomic_write`: the content goes to a temporary file in
the same folder (unique per process and thread, so concurrent writers of one path never share it), is
flushed and fsynced, then renamed over the target, which POSIX makes atomic.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dhns_search.errors import WriteError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "os_error"]


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
