"""Several worker processes on one study: ``run --workers N`` / ``--devices`` on this machine, and
``dhns-search worker`` joining a study from any machine.

:func:`run_workers` prepares the study and its MLflow parent run once (so workers never race their
creation), then starts one ``python -m dhns_search worker`` process per device slot, each in a session
of its own with its device, its share of the cores (``torch.set_num_threads``) and ``--no-live``.  The
workers read what to run from the study (:func:`~.study_setup.joined_options`), take trials under the
study's budget (:mod:`.trial_loop`) and the last one to stop ends the parent run.  The first Ctrl-C, SIGTERM
or SIGHUP is passed on to every worker (each ends its trial at the next batch, checkpointed); a second one too.
A worker says on a pipe when its own signal handlers are in place (:func:`announce_ready`); until then
it has touched no storage, and a stop request ends it with SIGTERM instead (a SIGINT that lands while
Python or torch is still importing is a traceback or an abort from C++, not a stop request).  A worker
watches its ``run`` (:func:`watch_parent`): when the ``run`` dies, the worker stops as on SIGTERM.  A
worker killed outright (SIGKILL) is retried by the others; once the study meets its budget, ``run``
ends normally and says so in a note.

Storages: several processes need one that takes concurrent writers (a journal file, Redis, PostgreSQL):
without ``--storage``, ``journal:studies/<study>.journal``; a SQLite storage is refused with advice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

from rich.console import Console

from dhns_search.errors import ConfigError, StudyError
from dhns_search.search.options import RunOptions
from dhns_search.search.urls import default_journal, default_storage, display_url, sqlite_path

__all__ = ["announce_ready", "parse_devices", "run_workers", "watch_parent", "worker_slots"]

#: seconds between two looks at the study while the workers run (the lines of finished trials)
POLL_SECONDS = 1.0
#: the environment variable that gives a spawned worker the pipe on which it says it is ready
READY_FD_ENV = "DHNS_SEARCH_READY_FD"
#: the environment variable that gives a spawned worker the process id of its ``run``
PARENT_ENV = "DHNS_SEARCH_PARENT_PID"
#: seconds between two looks of a spawned worker at its ``run`` (:func:`watch_parent`)
PARENT_POLL_SECONDS = 1.0


def parse_devices(text: str) -> list[str]:
    """``cpu,cuda:0*2,cuda:1`` -> ``["cpu", "cuda:0", "cuda:0", "cuda:1"]`` (``*K``: K workers there)."""
    slots: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        name, _, count = item.partition("*")
        name = name.strip()
        if name not in ("cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise ConfigError(f"--devices: {item!r} is not a device (cpu, cuda or cuda:N, optionally *K for K "
                              "workers on it, e.g. cuda:0*2)")
        try:
            k = int(count) if count else 1
        except ValueError:
            k = 0
        if k < 1:
            raise ConfigError(f"--devices: {item!r}: the number of workers after * must be a positive integer")
        slots += [name] * k
    return slots


def worker_slots(options: RunOptions) -> list[str | None]:
    """The device of each worker process (None: the configuration's own) that ``options`` ask for."""
    if options.workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {options.workers})")
    if options.devices is None:
        return [options.device] * options.workers
    slots = parse_devices(options.devices)
    if options.workers > 1 and options.workers != len(slots):  # N workers over the listed devices, in turn
        slots = [slots[i % len(slots)] for i in range(options.workers)]
    _check_cuda(slots)
    return list(slots)


def _check_cuda(slots: list[str]) -> None:
    wanted = {s for s in slots if s.startswith("cuda")}
    if not wanted:
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for name in sorted(wanted):
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"--devices {name}: this machine has {count} GPU(s)"
                              + (f" (cuda:0 to cuda:{count - 1})" if count else ""))


def shared_storage(options: RunOptions, name: str) -> str:
    """The storage of several workers: ``--storage``, else a journal file; SQLite is refused."""
    url = options.storage
    if url is None:
        default = default_storage(name)
        path = sqlite_path(default)
        if path is not None and path.is_file():
            from dhns_search.search.storage import known_studies

            if name in [n for n, _ in known_studies(default)]:
                raise StudyError(
                    f"study {name!r} is in {display_url(default)}: SQLite takes one writer, so several workers "
                    "cannot continue it there. Continue it with one worker, or start a new study for several "
                    f"workers (the default is a journal file, {default_journal('NEW')}).")
        return default_journal(name)
    if sqlite_path(url) is not None:
        raise StudyError(
            f"--storage {display_url(url)}: SQLite takes one writer, and several workers on it would collide or "
            f"propose the same trials. Use --storage {default_journal(name)} (this machine, or a shared "
            "filesystem), redis://HOST:6379/0, or postgresql+psycopg://USER@HOST:5432/DB (several machines)")
    return url


def _threads(n: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // n)


def worker_command(options: RunOptions, name: str, storage: str, device: str | None, threads: int) -> list[str]:
    """The command line of one worker process."""
    cmd = [sys.executable, "-m", "dhns_search", "worker", "--study", name, "--storage", storage,
           "--tracking-uri", options.tracking_uri or "none", "--threads", str(threads),
           "--work-dir", str(options.work_dir), "--no-live", "--spawned"]
    if device is not None:
        cmd += ["--device", device]
    if options.max_trials_per_worker is not None:
        cmd += ["--max-trials-per-worker", str(options.max_trials_per_worker)]
    if options.timeout is not None:
        cmd += ["--timeout", str(options.timeout)]
    return cmd


def run_workers(options: RunOptions, *, console: Console | None = None, stop: threading.Event | None = None):
    """Prepare the study, run one worker process per slot, wait for all; returns the study's summary
    (raises :class:`~.runner.StudyInterrupted` when a stop request ended them)."""
    from dhns_search.search.recovery import sweep_dead_workers
    from dhns_search.search.runner import StudyInterrupted, _check_options, _summary, attach, prepare
    from dhns_search.search.space import load_space

    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    _check_options(options)  # before the study's name and storage are derived from them
    slots = worker_slots(options)
    name = options.study or load_space(options.space, overrides=options.overrides).path.stem  # type: ignore[union-attr]
    storage = shared_storage(options, name)
    run = prepare(replace(options, study=name, storage=storage))
    for note in run.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    bridge = attach(run, replace(options, device=None), worker=False)
    first = len(run.study.get_trials(deepcopy=False))
    threads = options.threads or _threads(len(slots))
    console.print(f"study [bold]{name}[/]: {len(slots)} workers ({', '.join(s or 'auto' for s in slots)}; "
                  f"{threads} thread(s) each) on {display_url(storage)}", highlight=False)
    workers = [_spawn(worker_command(options, name, storage, dev, threads)) for dev in slots]
    try:
        codes = _wait(workers, run.study, console, stop, first)
    finally:
        for w in workers:
            os.close(w.ready_fd)
    tracking = options.tracking_uri if bridge is not None else None
    lost = _lost_workers(codes, slots)
    if lost:  # a killed worker's trial: failed and queued again now, if no other worker did it
        sweep_dead_workers(run.study)
    new = [t.number for t in run.study.get_trials(deepcopy=False) if t.number >= first]
    summary = _summary(run, bridge, tracking, new, ([], {}), time.perf_counter() - t0)
    if stop is not None and stop.is_set() or any(c in _INTERRUPTED for c in codes):
        summary.stopped = "interrupted"
        raise StudyInterrupted(summary)
    failed = [f"worker {i} ({slots[i] or 'auto'}): exit code {c} (its message is above)"
              for i, c in enumerate(codes) if c is not None and c > 0]
    if failed or (lost and not _finished(run)):
        raise StudyError("; ".join(failed + lost) + "; the study is consistent: run the same command again to "
                         "continue it (a lost worker's trial resumes from its checkpoint)")
    for text in lost:  # the study is complete: a note, not a failure (exit code 0)
        note = f"{text}; the study met its budget all the same (a trial it was running is retried from its checkpoint)"
        console.print(f"[yellow]note:[/] {note}", highlight=False)
        summary.notes = [*summary.notes, note]
    summary.stopped = "budget met"
    return summary


#: exit codes of a worker that a stop request ended (SIGINT, SIGTERM, SIGHUP; as 128 + N, or as -N)
_INTERRUPTED = {130, 143, 129, -signal.SIGINT, -signal.SIGTERM, -getattr(signal, "SIGHUP", 1)}


def _lost_workers(codes: list[int], slots: list[str | None]) -> list[str]:
    """Workers that another signal (SIGKILL, the kernel's out-of-memory killer ...) ended without a word."""
    lost = []
    for i, code in enumerate(codes):
        if code is not None and code < 0 and code not in _INTERRUPTED:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            lost.append(f"worker {i} ({slots[i] or 'auto'}) was killed by {name}")
    return lost


def _finished(run) -> bool:
    """Whether the study met its budget (a study without a trial budget: its workers stopped by themselves)."""
    from dhns_search.search.recovery import budget_used

    return run.n_trials is None or budget_used(run.study) >= run.n_trials


class _Worker:
    """A worker process and the read end of its ready pipe."""

    def __init__(self, proc: subprocess.Popen, ready_fd: int):
        self.proc, self.ready_fd = proc, ready_fd
        self.ready = False
        self.asked = False  # a stop request was passed on

    def poll_ready(self) -> bool:
        if not self.ready:
            try:
                self.ready = os.read(self.ready_fd, 1) == b"r"
            except BlockingIOError:  # nothing written yet
                pass
        return self.ready

    def ask_to_stop(self) -> None:
        """SIGINT to a ready worker (it stops at the next batch; a second one at once); SIGTERM to one whose
        handlers are not in place yet (it has started nothing: the default action ends it quietly)."""
        if self.proc.poll() is not None:
            return
        self.asked = True
        try:
            os.killpg(self.proc.pid, signal.SIGINT if self.poll_ready() else signal.SIGTERM)
        except ProcessLookupError:
            pass


def _spawn(cmd: list[str]) -> _Worker:
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, pass_fds=(write_fd,),
                                env={**os.environ, READY_FD_ENV: str(write_fd), PARENT_ENV: str(os.getpid())})
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    os.set_blocking(read_fd, False)
    return _Worker(proc, read_fd)


def announce_ready() -> None:
    """In a worker that ``run --workers`` started: say that its signal handlers are in place (call it right
    after installing them, before touching the storage), and from now on watch the ``run``
    (:func:`watch_parent`).  Elsewhere nothing."""
    fd = os.environ.pop(READY_FD_ENV, None)
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is not None and parent.isdigit():
        watch_parent(int(parent))
    if fd is None:
        return
    try:
        os.write(int(fd), b"r")
        os.close(int(fd))
    except (OSError, ValueError):  # the parent is gone, or the variable is not ours
        pass


def watch_parent(parent: int, every: float = PARENT_POLL_SECONDS) -> threading.Thread:
    """A worker of ``run --workers`` whose ``run`` dies (SIGKILL, a crash) stops as on SIGTERM: its trial
    ends at the next batch, checkpointed and queued again, and it starts no other (the same ``run``
    command continues the study).  Without this it would go on alone, unseen, until the budget is met.
    A daemon thread looks every ``every`` seconds whether this process was handed to another parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)  # the handlers of the command line: a clean stop

    thread = threading.Thread(target=watch, name="dhns-watch-parent", daemon=True)
    thread.start()
    return thread


def _wait(workers: list[_Worker], study, console: Console, stop: threading.Event | None,
          first: int) -> list[int]:
    """Wait for every worker: print each trial as it finishes, pass stop requests on; returns exit codes."""
    shown: set[int] = set()
    try:
        while None in [w.proc.poll() for w in workers]:  # every one polled: a killed worker is reaped at once
            if stop is not None and stop.is_set():
                for w in workers:
                    if not w.asked:
                        w.ask_to_stop()
            _show_finished(study, console, shown, first)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:  # a second request: the workers stop at once too, then this process
        for w in workers:
            w.ask_to_stop()
        for w in workers:
            w.proc.wait()
        raise
    _show_finished(study, console, shown, first)
    return [w.proc.returncode for w in workers]


def _show_finished(study, console: Console, shown: set[int], first: int) -> None:
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        if t.number < first or t.number in shown:
            continue
        shown.add(t.number)
        value = "" if t.values is None else f" {t.values[0]:.4f}"
        why = f" ({t.user_attrs['fail_reason']})" if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs else ""
        console.print(f"trial {t.number} {t.state.name.lower()}{value}{why} on {t.user_attrs.get('device', '?')}",
                      highlight=False)
