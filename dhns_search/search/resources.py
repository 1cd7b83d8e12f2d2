"""Peak memory of one trial (the ``peak_memory_mb`` objective and the ``--max-memory-mb`` cap).

A trial runs inside the study's process, so process-lifetime figures (``ru_maxrss``) say nothing about
one trial.  :class:`PeakMemory` measures the block it wraps:

- **CUDA** (the trial trains on a GPU): ``torch.cuda.reset_peak_memory_stats()`` before and
  ``torch.cuda.max_memory_allocated()`` after: the peak of tensor memory held by PyTorch's caching
  allocator on the current device (not the cached-but-free blocks, not other processes).  ``kind``
  ``"cuda_allocated"``.
- **CPU**: a daemon thread reads the process's resident set size from ``/proc/self/statm`` every
  ``interval`` seconds (20 ms by default) and keeps the maximum.  This is the RSS peak *of the whole
  process* during the trial, so it includes what was loaded before (the dataset shared by the trials,
  Python, torch, MLflow ...) and memory that an earlier trial freed but the allocator kept; a spike
  shorter than the interval can be missed.  ``kind`` ``"rss"``.  Compare trials of one study with it,
  not with other tools' figures.
- Without ``/proc`` (macOS ...): ``resource.getrusage(...).ru_maxrss``, the peak of the process so far
  (an upper bound that never goes down), ``kind`` ``"maxrss"``; without ``resource`` (Windows): no
  figure (``peak_mb`` None, ``kind`` ``"unavailable"``).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PeakMemory", "memory_kind", "rss_bytes"]

_STATM = "/proc/self/statm"
_MB = float(2**20)


def rss_bytes() -> int | None:
    """The process's current resident set size from ``/proc/self/statm``, or None without ``/proc``."""
    try:
        with open(_STATM, "rb") as fh:
            fields = fh.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def memory_kind(cuda: bool = False) -> str:
    """What :class:`PeakMemory` would measure here: ``cuda_allocated``, ``rss``, ``maxrss`` or ``unavailable``."""
    if cuda:
        return "cuda_allocated"
    if rss_bytes() is not None:
        return "rss"
    return "maxrss" if _maxrss_bytes() is not None else "unavailable"


class PeakMemory:
    """Context manager measuring the peak memory of its block; read ``peak_mb`` and ``kind`` after it.

    ``cuda=True`` measures the CUDA allocator of the current device (see the module docstring).
    """

    def __init__(self, *, cuda: bool = False, interval: float = 0.02) -> None:
        self.cuda = cuda
        self.interval = interval
        self.kind = memory_kind(cuda)
        self._peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._torch: Any = None

    @property
    def peak_mb(self) -> float | None:
        return None if self._peak is None else self._peak / _MB

    def _sample(self) -> None:
        value = rss_bytes()
        if value is not None and (self._peak is None or value > self._peak):
            self._peak = value

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Self:
        if self.kind == "cuda_allocated":
            import torch

            self._torch = torch
            torch.cuda.reset_peak_memory_stats()
        elif self.kind == "rss":
            self._sample()
            self._thread = threading.Thread(target=self._run, name="dhns-peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "cuda_allocated":
            self._peak = int(self._torch.cuda.max_memory_allocated())
        elif self.kind == "rss":
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._sample()
        elif self.kind == "maxrss":
            self._peak = _maxrss_bytes()
