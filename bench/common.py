"""Shared helpers of the benchmark scripts: machine info and appending a section to docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "benchmarks"
DOC = REPO / "docs" / "benchmarks.md"


def time_calls(fn, repeats: int, *, warmup: bool = False) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of ``repeats`` calls of ``fn()``.

    ``warmup`` makes one untimed call first.  Callers pick their statistic (min, median).
    """
    if warmup:
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def machine_info() -> str:
    import torch

    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = f"cuda {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}, {dev}"
    )


def command_line() -> str:
    rel = Path(sys.argv[0]).resolve()
    try:
        rel = rel.relative_to(REPO)
    except ValueError:
        pass
    return " ".join([".venv/bin/python", str(rel), *map(shlex.quote, sys.argv[1:])])


def append_section(title: str, body: str, doc: Path = DOC) -> None:
    """Append a dated section with machine info and the exact command to docs/benchmarks.md."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = (
        f"\n## {title}\n\n"
        f"- measured: {stamp}\n- machine: {machine_info()}\n- command: `{command_line()}`\n\n{body.strip()}\n"
    )
    if not doc.exists():
        doc.write_text("# Benchmarks\n\nFigures measured by the scripts in `bench/`; each section says how to rerun it.\n")
    with doc.open("a", encoding="utf-8") as fh:
        fh.write(text)
    print(f"appended to {doc}")


RESULTS = REPO / "docs" / "results.md"


def append_result(text: str, out: Path = RESULTS) -> None:
    """Append a results section (already headed, dated and with its command) to docs/results.md."""
    if not out.exists():
        out.write_text("# Results\n\nModel comparisons measured with the scripts in `bench/`; each section says how "
                       "to rerun it.\n")
    with out.open("a", encoding="utf-8") as fh:
        fh.write("\n" + text)
    print(f"appended to {out}")
