"""Epochs saved by pruning, and the harness overhead per trial (Optuna + MLflow).

Runs the same study (space, sampler, seed, number of trials) three times on the embedded graph: without
pruning, with the median pruner and with hyperband.  For each, counts the training epochs spent (a pruned
trial counts the epochs it ran) until the study's best validation MRR first comes within ``--tolerance``
of the unpruned study's best, and the epochs of the whole study.  Overhead per trial = the trial's wall
time minus the trainer's own time (completed trials only): sampling, storage, MLflow runs and artifacts.

    .venv/bin/python bench/pruning.py [--n-trials 12] [--space spaces/default.yaml]

Studies and MLflow stores go to a temporary folder; figures are printed and appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, append_section


def study_figures(study, tolerance: float, target: float | None) -> dict:
    import optuna

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    spent, best, reached_at = 0, float("-inf"), None
    curve = []
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            spent += int(t.user_attrs.get("epochs_run", 0))
            best = max(best, float(t.value))
        elif t.state == optuna.trial.TrialState.PRUNED:
            spent += int(t.user_attrs.get("pruned_at", 0))
        curve.append((spent, best))
    if target is not None:
        reached_at = next((e for e, b in curve if b >= target - tolerance), None)
    overhead = [
        t.user_attrs["trial_seconds"] - t.user_attrs["train_seconds"]
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and "train_seconds" in t.user_attrs
    ]
    states = [t.state.name for t in trials]
    return {
        "epochs_total": spent,
        "best": best,
        "reached_at": reached_at,
        "pruned": states.count("PRUNED"),
        "complete": states.count("COMPLETE"),
        "failed": states.count("FAIL"),
        "overhead_mean": statistics.fmean(overhead) if overhead else float("nan"),
        "overhead_median": statistics.median(overhead) if overhead else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", type=Path, default=REPO / "spaces" / "default.yaml")
    ap.add_argument("--n-trials", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.005)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import optuna

    from dhns_search.search import RunOptions, run_study

    tmp = Path(tempfile.mkdtemp(prefix="dhns-bench-prune-"))
    results = {}
    for pruner in ["none", "median", "hyperband"]:
        t = time.perf_counter()
        summary = run_study(
            RunOptions(
                space=args.space,
                study=f"prune-{pruner}",
                n_trials=args.n_trials,
                sampler="tpe",
                pruner=pruner,
                storage=f"sqlite:///{tmp}/{pruner}.db",
                tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                seed=args.seed,
            )
        )
        wall = time.perf_counter() - t
        study = optuna.load_study(study_name=summary.study, storage=summary.storage)
        results[pruner] = (study, wall)
        print(f"{pruner:10s} done in {wall:.1f} s")

    target = study_figures(results["none"][0], args.tolerance, None)["best"]
    rows = []
    for pruner, (study, wall) in results.items():
        f = study_figures(study, args.tolerance, target)
        rows.append((pruner, f, wall))
        print(
            f"{pruner:10s} best {f['best']:.4f}  epochs to within {args.tolerance} of {target:.4f}: "
            f"{f['reached_at']}  total epochs {f['epochs_total']}  pruned {f['pruned']}  "
            f"overhead/trial {f['overhead_mean']:.2f} s  wall {wall:.0f} s"
        )

    lines = [
        (f"Space `{args.space.relative_to(REPO) if args.space.is_relative_to(REPO) else args.space}`, "
        f"{args.n_trials} trials, TPE seed {args.seed}; target = the unpruned study's best validation MRR "
        f"({target:.4f}) minus {args.tolerance}. Epochs: training epochs spent, pruned trials counting the "
        "epochs they ran. Overhead: trial wall time minus trainer time, completed trials (Optuna sampling, "
        "SQLite storage, MLflow child run, params, metrics and config artifact)."),
        "",
        ("| pruner | best valid MRR | epochs to reach target | epochs, whole study | complete / pruned / failed "
        "| overhead per trial, mean (median) | study wall time |"),
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for pruner, f, wall in rows:
        reached = "not reached" if f["reached_at"] is None else str(f["reached_at"])
        lines.append(
            f"| {pruner} | {f['best']:.4f} | {reached} | {f['epochs_total']} | "
            f"{f['complete']} / {f['pruned']} / {f['failed']} | {f['overhead_mean']:.2f} s "
            f"({f['overhead_median']:.2f} s) | {wall:.0f} s |"
        )
    if not args.no_write:
        append_section("Pruning: epochs to a near-best MRR, and harness overhead (bench/pruning.py)", "\n".join(lines))


if __name__ == "__main__":
    main()
