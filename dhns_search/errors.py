"""Errors that reach the user as one clear message and a non-zero exit code.

Library code raises :class:`DhnsError` (or a subclass) for any bad input: the CLI catches it, prints
the message and exits with ``exit_code``.  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DhnsError(Exception):
    """A problem with the user's input or environment, explained in ``str(err)``."""

    exit_code = 2


class ConfigError(DhnsError):
    """A configuration or search-space file that does not validate."""


class DataError(DhnsError):
    """A dataset or feature file that is missing, malformed or inconsistent."""


class TrainingError(DhnsError):
    """Training could not go on (for example a NaN or infinite loss)."""

    exit_code = 3


class StudyError(DhnsError):
    """An unknown study, a study without completed trials, or a storage problem."""


class WriteError(DhnsError):
    """A file that could not be written: a full disk, a read-only filesystem, a name too long, a path
    through a file.  ``path`` is the file, ``reason`` the system's words (``No space left on device``)."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


class TrackingError(DhnsError):
    """An MLflow tracking store that cannot be used (unknown scheme, unwritable, unreachable)."""


class DhnsWarning(UserWarning):
    """Something the user should know that does not stop the run (a dataset oddity, a precision fallback).

    Library code emits it with :func:`warn`; the CLI prints each as one ``warning:`` line.
    """


def warn(message: str) -> None:
    """Emit ``message`` as a :class:`DhnsWarning` (shown once per message and call site by default)."""
    import warnings

    warnings.warn(message, DhnsWarning, stacklevel=2)
