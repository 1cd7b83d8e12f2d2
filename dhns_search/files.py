"""Files: text read with honest errors, atomic writes, file locks, and the database file behind a SQLite URL.

Reading: :func:`read_text_file` reads a UTF-8 text file (a configuration, a space file, an OpenKE split)
and refuses, with one message naming the file, what is not one: a missing path, a folder, a broken link,
a FIFO, a known binary format (:func:`binary_kind`), UTF-16/32 and invalid UTF-8.  The caller chooses
the error class (:class:`~dhns_search.errors.ConfigError` for YAML, :class:`~dhns_search.errors.DataError`
for data).

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

from dhns_search.errors import DhnsError, WriteError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "binary_kind", "decode_text", "file_lock",
           "lock_path", "not_a_file_reason", "os_error", "read_text_file", "sqlite_path"]

_SQLITE = "sqlite:///"


# ------------------------------------------------------------------------------------ reading
#: Leading bytes of common binary formats, so a message says what a file is instead of "not UTF-8".
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"PK\x03\x04", "a zip archive (a .zip, .npz or torch .pth/.pt file)"),
    (b"BZh91AY&SY", "a bzip2-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
    (b"\x93NUMPY", "a numpy .npy array"),
    (b"\x80\x02", "a Python pickle"),
    (b"\x80\x03", "a Python pickle"),
    (b"\x80\x04", "a Python pickle"),
    (b"\x80\x05", "a Python pickle"),
    (b"\x89PNG", "a PNG image"),
    (b"%PDF", "a PDF document"),
)
_WIDE_BOMS: tuple[tuple[bytes, str], ...] = (  # longest first: FF FE starts both
    (b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"),
)


def binary_kind(head: bytes) -> str | None:
    """What a file starting with the bytes ``head`` is, when they are the signature of a common binary
    format (``"a gzip-compressed file"``); None otherwise."""
    return next((what for magic, what in _MAGIC if head.startswith(magic)), None)


def decode_text(raw: bytes, label: str, error: type[DhnsError] = DhnsError) -> str:
    """The text of a file's bytes ``raw``: UTF-8, with an optional UTF-8 byte-order mark (dropped).

    A known binary format (compressed, zip, ``.npy``, pickle, image), a NUL byte, UTF-16/32 text and
    invalid UTF-8 raise ``error`` with one message naming ``label`` and, where it means something, the
    line.  Shared by the YAML reader (:mod:`dhns_search.config.io`) and the OpenKE reader
    (:mod:`dhns_search.data.openke`).
    """
    kind = binary_kind(raw)
    if kind is not None:
        raise error(f"{label}: {kind}, not a text file")
    for bom, encoding in _WIDE_BOMS:
        if raw.startswith(bom):
            raise error(f"{label}: {encoding} text (byte-order mark {bom.hex(' ').upper()}); save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise error(f"{label} line {line}: a NUL byte (offset {nul}): binary data, not a text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        byte = raw[err.start : err.start + 1].hex().upper()
        raise error(
            f"{label} line {line}: not UTF-8 text (byte 0x{byte} at offset {err.start}); save the file as UTF-8"
        ) from None


def read_text_file(path: str | Path, label: str | None = None, error: type[DhnsError] = DhnsError) -> str:
    """Read ``path`` as UTF-8 text (see :func:`decode_text`); any problem raises ``error`` naming it.

    A missing path, a directory, a broken symbolic link and anything that is not a regular file (a FIFO
    would block the reader) are refused before opening; an ``OSError`` while reading (permissions, I/O)
    is reported with its reason.
    """
    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        raise error(f"{label}: {not_a_file_reason(path)}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise error(f"{label}: cannot be read: {err.strerror or err}") from None
    return decode_text(raw, label, error)


def not_a_file_reason(path: Path) -> str:
    """Why ``path``, for which ``is_file()`` is False, is not a regular file one can read."""
    if path.is_symlink() and not path.exists():
        return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
    if path.is_dir():
        return "a directory, not a file"
    if path.exists():
        return "not a regular file (a FIFO, socket or device)"
    return "no such file"


# ------------------------------------------------------------------------------------ writing
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
