"""Search throughput on a small embedded graph: completed trials per hour with 1 and 2 worker processes
(``run --workers W`` on a journal storage, MLflow off), and how long a trial whose worker was killed
(SIGKILL, in the middle of the trial) takes to be retried when the study is run again.

    .venv/bin/python bench/throughput.py [--trials 6] [--epochs 6] [--no-write]

The wall time of each run includes starting the processes (Python, torch, Optuna: several seconds), as a
user sees it.  The retry time is from starting ``dhns-search run`` again to the retried trial RUNNING
(the sweep of dead workers on this machine fails and queues it at once; no heartbeat grace period).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, append_section


def write_space(path: Path, epochs: int) -> Path:
    """``spaces/smoke.yaml`` at ``epochs`` epochs with its two plain parameters (learning rate, scorer)."""
    doc = yaml.safe_load((REPO / "spaces" / "smoke.yaml").read_text(encoding="utf-8"))
    doc["description"] = "Throughput benchmark; the real trainer on a 60-entity graph."
    doc["fixed"]["train.epochs"] = epochs
    doc["params"] = {key: doc["params"][key] for key in ("train.lr", "model.scorer")}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _run_args(space: Path, study: str, journal: Path, trials: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "dhns_search", "run", "--space", str(space), "--study", study,
            "--storage", f"journal:{journal}", "--tracking-uri", "none", "--n-trials", str(trials),
            "--workers", str(workers), "--sampler", "random", "--pruner", "none", "--no-live"]


def throughput(folder: Path, space: Path, trials: int, workers: int) -> float:
    """Completed trials per hour of ``run --workers W --n-trials N`` on a new study."""
    t0 = time.perf_counter()
    subprocess.run(_run_args(space, f"w{workers}", folder / f"w{workers}.journal", trials, workers), cwd=folder,
                   env=_env(), check=True, capture_output=True)
    return trials / (time.perf_counter() - t0) * 3600


def _study(journal: Path, name: str):
    import optuna

    from dhns_search.search.storage import make_storage

    return optuna.load_study(study_name=name, storage=make_storage(f"journal:{journal}"))


def retry_seconds(folder: Path, space: Path) -> tuple[float, int]:
    """Kill a worker in the middle of its first trial (after its first checkpoint), run the study again;
    returns the seconds until the retry runs and the epoch it resumes from."""
    journal = folder / "kill.journal"
    proc = subprocess.Popen(_run_args(space, "kill", journal, 2, 1), cwd=folder, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not list(folder.glob("studies/work/kill-*/trial-0000/checkpoint.pt")):
        if proc.poll() is not None:
            raise RuntimeError("the run ended before its first checkpoint")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.perf_counter()
    again = subprocess.Popen(_run_args(space, "kill", journal, 2, 1), cwd=folder, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waited = None
    while again.poll() is None:
        retry = [t for t in _study(journal, "kill").trials if t.system_attrs.get("failed_trial") == 0]
        if retry and retry[0].state.name != "WAITING" and waited is None:
            waited = time.perf_counter() - t0
        time.sleep(0.1)
    retry = next(t for t in _study(journal, "kill").trials if t.system_attrs.get("failed_trial") == 0)
    if waited is None:
        waited = time.perf_counter() - t0
    return waited, int(retry.user_attrs.get("resumed_from_epoch", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dhns-throughput-") as tmp:
        folder = Path(tmp)
        space = folder / "throughput.yaml"
        write_space(space, args.epochs)
        rates = {w: throughput(folder, space, args.trials, w) for w in (1, 2)}
        waited, epoch = retry_seconds(folder, space)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    body = textwrap.dedent(f"""
        {args.trials} trials of {args.epochs} epochs (60 entities, dim 8, DHNS on; random sampler, no pruning,
        MLflow off), a journal storage, {cores} cores.

        | workers | completed trials per hour | vs 1 worker |
        | --- | ---: | ---: |
        | 1 | {rates[1]:.0f} | 1.00 |
        | 2 | {rates[2]:.0f} | {rates[2] / rates[1]:.2f} |

        A worker killed (SIGKILL) after the first checkpoint of its first trial: running the study again, the
        retry was RUNNING {waited:.1f} s after the command started (process start-up included), resuming
        from epoch {epoch}.
    """)
    print(body)
    if not args.no_write:
        append_section("Search throughput and retries (bench/throughput.py)", body)


if __name__ == "__main__":
    main()
