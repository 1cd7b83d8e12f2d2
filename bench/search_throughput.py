"""Search throughput of an MKG-Y space: completed trials per hour of this code against an earlier one.

    .venv/bin/python bench/search_throughput.py [--space spaces/mkg-y-cpu.yaml] [--before 3da6b8b] [--trials 6]

Both versions run the same study: the space file of ``--before`` (so that the older code can read it and
both sample the same configurations), the random sampler with seed 0, no pruning, MLflow off, a new
SQLite study per run, ``--epochs`` epochs per trial with one validation at the end, MKG-Y with textual
features from the entity names (made once into ``bench/out``) and visual marked missing, one process with
``--threads`` torch threads.  The fixed budget is the work of a trial: the same sampled configurations
trained for the same epochs, so the ratio of trials per hour is the ratio of what a search buys.

The default space is ``spaces/mkg-y-cpu.yaml``, the CPU-sized version of ``spaces/mkg-y.yaml`` (DistMult at
dim 128, the cheap generator settings, the same KGC and DHNS knobs).  ``spaces/mkg-y.yaml`` itself samples
trials such as RotatE at dim 1024 with a 4x denoiser trained on every row: on one core of this machine a
single epoch of that trial ran for more than 13 minutes with the older code, so it is for a GPU
(``--space spaces/mkg-y.yaml``).

``--before`` defaults to the last commit before the speed work of issue 13 (candidate scoring, the
two-pass L3 penalty, keyed filtered sampling, the diffusion loss's fast path).  Its code is extracted
with ``git archive`` into a temporary folder and run with this environment's Python (``PYTHONPATH``).
Runs alternate between the versions (``--rounds`` pairs).  Per run: wall time of the command (process
start-up included), the trials' own durations from the storage, and the children's CPU time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, REPO, append_section, cpu_flags, load_average
from epoch_speed import text_features

TITLE = "Search throughput of an MKG-Y space, before and after the speed work (bench/search_throughput.py)"


def extract(rev: str, dest: Path) -> Path:
    """The tree of commit ``rev`` (code, spaces, presets) in ``dest``."""
    archive = dest / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "tree", filter="data")
    return dest / "tree"


def run_study(code: Path, space: Path, folder: Path, args, features: Path) -> dict[str, float]:
    """One new study of ``args.trials`` trials with the code in ``code``; its figures."""
    import optuna

    storage = f"sqlite:///{folder / 'study.db'}"
    cmd = [sys.executable, "-m", "dhns_search", "run", "--space", str(space), "--study", "throughput",
           "--storage", storage, "--tracking-uri", "none", "--n-trials", str(args.trials), "--sampler",
           "random", "--seed", "0", "--pruner", "none", "--no-live",
           "--set", f"data.path={args.data}", "--set", f"data.features={{textual: {features}}}",
           "--set", f"train.epochs={args.epochs}", "--set", f"train.eval_every={args.epochs}",
           "--set", "train.patience=0"]
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(args.threads)}
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=folder, env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"error: the study with the code in {code} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    trials = optuna.load_study(study_name="throughput", storage=storage).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    return {"complete": len(done), "of": len(trials), "wall": wall, "trial_mean": statistics.fmean(secs),
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "params": [t.params for t in done]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="3da6b8b", help="the earlier commit (default: before issue 13's work)")
    ap.add_argument("--data", type=Path, default=BENCHMARKS / "MKG-Y")
    ap.add_argument("--space", default="spaces/mkg-y-cpu.yaml", help="space file, as of --before")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="before/after pairs, alternating")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    args.data = args.data.resolve()
    features = text_features(args.data).resolve()
    load_before = load_average()
    results: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="dhns-throughput-") as tmp:
        old = extract(args.before, Path(tmp))
        space = old / args.space
        for r in range(args.rounds):
            for name, code in (("before", old), ("after", REPO))[:: 1 if r % 2 == 0 else -1]:
                folder = Path(tmp) / f"{name}-{r}"
                folder.mkdir()
                res = run_study(code, space, folder, args, features)
                results[name].append(res)
                print(f"{name:6s} round {r}: {res['complete']}/{res['of']} complete, {res['wall']:.0f} s wall, "
                      f"{res['trial_mean']:.1f} s per trial, {res['cpu']:.0f} s CPU", flush=True)
    if results["before"][0]["params"] != results["after"][0]["params"]:
        sys.exit("error: the two versions sampled different configurations; the comparison is void")
    report(args, results, load_before, load_average())


def report(args, results, load_before: str, load_after: str) -> None:
    rows, per_hour = [], {}
    for name, runs in results.items():
        wall = statistics.fmean(r["wall"] for r in runs)
        trial = statistics.fmean(r["trial_mean"] for r in runs)
        cpu = statistics.fmean(r["cpu"] for r in runs)
        per_hour[name] = 3600 * args.trials / wall
        label = f"{name} ({args.before})" if name == "before" else "after (this code)"
        rows.append(f"| {label} | {runs[0]['complete']} | {wall:.0f} | {trial:.1f} | {cpu / args.trials:.0f} | "
                    f"{per_hour[name]:.1f} |")
    configs = "; ".join(", ".join(f"{k.rsplit('.', 1)[-1]} {v:.3g}" if isinstance(v, float) else
                                  f"{k.rsplit('.', 1)[-1]} {v}" for k, v in p.items())
                        for p in results["after"][0]["params"])
    text = "\n".join([
        (f"`{args.space}` as of {args.before}, {args.trials} trials of {args.epochs} epoch(s) each (random "
         f"sampler seed 0, no pruning, MLflow off, SQLite), MKG-Y with textual features from names, visual "
         f"missing; one process, {args.threads} torch thread(s); {args.rounds} alternating round(s) per version."),
        (f"CPU flags: {cpu_flags()}. Load average (1, 5, 15 min) before: {load_before}; after: {load_after} on "
         f"{os.cpu_count()} cores."),
        "",
        "| code | trials complete | wall s per study | s per trial (storage) | CPU s per trial | trials per hour |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"After / before: {per_hour['after'] / per_hour['before']:.2f}x the trials per hour.",
        f"Sampled trials: {configs}.",
    ])
    print(text)
    if not args.no_write:
        append_section(TITLE, text)


if __name__ == "__main__":
    main()
