"""Ctrl-C, SIGTERM and SIGHUP (a closed terminal or SSH session) during a long command: the first asks the
work to stop cleanly at the next batch (a :class:`threading.Event` the library checks), the second stops
at once (``KeyboardInterrupt``, which still ends every run it crosses); :func:`exit_code` is 130 for
SIGINT, 143 for SIGTERM, 129 for SIGHUP.  The handlers are installed whatever the inherited disposition
(a background job of a non-interactive shell starts with SIGINT ignored)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["exit_code", "stop_on_signals"]

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[tuple[threading.Event, list[int]]]:
    """While the block runs: ``(stop event, signals received)``; handlers restored afterwards."""
    stop = threading.Event()
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        if len(received) == 1:
            stop.set()
            return
        for s in _SIGNALS:  # a third one: Python's default
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield stop, received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def exit_code(received: list[int]) -> int:
    """128 + the first signal (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""
    return 128 + int(received[0]) if received else 130
