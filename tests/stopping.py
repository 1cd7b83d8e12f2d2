"""A stop event for tests: reads as set from its (n+1)-th check on, so a run stops after n batches."""

from __future__ import annotations

import threading


class StopAfter(threading.Event):
    """An event that reads as set from the (n+1)-th check on: stops a run after n batches."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0
