"""Shared helpers of the benchmark scripts: machine info and appending a section to docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
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


def cpu_flags() -> str:
    """The vector-instruction flags of this CPU (avx*, fma, amx*), from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                keep = sorted(f for f in flags if f.startswith(("avx", "amx")) or f == "fma")
                return " ".join(keep) or "no avx"
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as text."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def command_line() -> str:
    rel = Path(sys.argv[0]).resolve()
    try:
        rel = rel.relative_to(REPO)
    except ValueError:
        pass
    return " ".join([".venv/bin/python", str(rel), *map(shlex.quote, sys.argv[1:])])


CURRENT = "## Current figures"
#: every recorded run, in order (the current figures hold the latest of each benchmark)
HISTORY_DOC = REPO / "docs" / "history" / "benchmarks.md"


def append_section(title: str, body: str, doc: Path = DOC, history: Path | None = None) -> None:
    """Record a run: a dated section with machine info and the exact command.

    The section replaces the current section of the same title in ``doc`` (docs/benchmarks.md), or is added
    there, and is appended to ``history`` (docs/history/benchmarks.md; never edited afterwards).
    """
    history = HISTORY_DOC if history is None and doc == DOC else (history or doc.with_name(doc.stem + "-history.md"))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = (
        f"### {title}\n\n"
        f"- measured: {stamp}\n- machine: {machine_info()}\n- command: `{command_line()}`\n\n{body.strip()}\n"
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.exists() else (
        f"# Benchmarks\n\nFigures measured by the scripts in `bench/`; each section says how to rerun it.\n\n"
        f"{CURRENT}\n")
    if CURRENT not in text:
        raise SystemExit(f"{doc}: expected the heading {CURRENT!r}")
    head, current = text.split(CURRENT + "\n", 1)
    parts = re.split(r"(?m)^(?=### )", current)  # the text before the first section, then the sections
    intro, sections = parts[0].strip(), [part.rstrip() + "\n" for part in parts[1:]]
    titles = [part.split("\n", 1)[0][4:] for part in sections]
    if title in titles:
        sections[titles.index(title)] = section
    else:
        sections.append(section)
    current = "\n" + (intro + "\n\n" if intro else "") + "\n".join(sections)
    doc.write_text(head + CURRENT + "\n" + current, encoding="utf-8")
    history.parent.mkdir(parents=True, exist_ok=True)
    old = history.read_text(encoding="utf-8") if history.exists() else "# Benchmarks: history\n\n## History\n"
    history.write_text(old.rstrip() + "\n\n" + section, encoding="utf-8")
    print(f"recorded in {doc} (current figures) and {history} (history)")


#: where the bench scripts' --record appends results runs (docs/results.md is updated by hand from them)
RESULTS = REPO / "docs" / "history" / "results.md"


def append_result(text: str, out: Path = RESULTS) -> None:
    """Append a results section (already headed, dated and with its command) to docs/results.md."""
    if not out.exists():
        out.write_text("# Results\n\nModel comparisons measured with the scripts in `bench/`; each section says how "
                       "to rerun it.\n")
    with out.open("a", encoding="utf-8") as fh:
        fh.write("\n" + text)
    print(f"appended to {out}")
