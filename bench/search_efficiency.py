"""How well each search strategy spends CPU: best validation MRR against cumulative CPU seconds.

Every strategy (an Optuna sampler and a pruner, as ``dhns-search run --sampler --pruner`` takes them) runs
the same space with the same CPU budget (``run --cpu-hours``: a study starts no trial once its finished
trials spent the budget), repeated with different study seeds.  A study's curve is the best validation
metric of its completed trials against the CPU seconds of its finished trials (completed, pruned and
failed alike), in order of completion; the part beyond the budget is cut off.  The target is 99% of the
best value any strategy found in any repetition; for each run the CPU time to reach it, and per strategy
the median over repetitions (a repetition that never reaches it counts as the budget, and the count of
those that do is shown).  Trials run with one torch thread, so CPU seconds are the work done.

    .venv/bin/python bench/search_efficiency.py [--space spaces/embedded-campaign.yaml] [--reps 5]
        [--cpu-seconds 300] [--strategies random,tpe,tpe-median,tpe-hyperband] [--set KEY=VALUE ...]
        [--plot docs/results/search-efficiency-embedded.png] [--record]

Studies go to one Optuna journal, ``bench/out/search-efficiency/<space>/studies.journal`` (one study per strategy
and repetition; ``--out`` another folder, whose ``work/`` holds the trials' folders): the same command continues
an interrupted benchmark, and repetitions already at their budget are not rerun.  A journal is a text file that
only grows, so a benchmark of more than one sitting can keep it under version control (``--out
campaigns/efficiency-<name>``) and continue on another machine.
Figures are printed and, with ``--record``, appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, append_section, cpu_flags, load_average

#: strategy name -> (sampler, pruner)
STRATEGIES = {
    "random": ("random", "none"),
    "random-hyperband": ("random", "hyperband"),
    "tpe": ("tpe", "none"),
    "tpe-median": ("tpe", "median"),
    "tpe-hyperband": ("tpe", "hyperband"),
    "tpe-percentile": ("tpe", "percentile"),
    "gp-median": ("gp", "median"),
}
TARGET_FRACTION = 0.99


def storage_url(out: Path) -> str:
    """The benchmark's Optuna storage: one journal file in ``out`` for every strategy and repetition."""
    return f"journal:{out / 'studies.journal'}"


def run_one(space: Path, strategy: str, rep: int, budget: float, out: Path, overrides: list[str]) -> None:
    """One study of ``strategy`` with study seed ``rep`` to ``budget`` CPU seconds (continued if it exists)."""
    from dhns_search.search.options import RunOptions
    from dhns_search.search.runner import run_study

    sampler, pruner = STRATEGIES[strategy]
    options = RunOptions(space=space, study=f"{strategy}-{rep}", storage=storage_url(out),
                         tracking_uri="none", sampler=sampler, pruner=pruner, seed=rep, cpu_hours=budget / 3600.0,
                         work_dir=out / "work", overrides=overrides)
    summary = run_study(options)
    print(f"{strategy} rep {rep}: {summary.n_trials} trials, best {summary.best_value}", flush=True)


def curve(study, budget: float) -> list[tuple[float, float]]:
    """(cumulative CPU seconds, best completed value so far) after each finished trial, within ``budget``."""
    from optuna.trial import TrialState

    finished = sorted((t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
                      key=lambda t: t.datetime_complete)
    spent, best, points = 0.0, float("-inf"), []
    for t in finished:
        spent += float(t.user_attrs.get("cpu_seconds", 0.0))
        if spent > budget:
            break
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            best = max(best, float(t.value))
        points.append((spent, best))
    return points


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    return next((spent for spent, best in points if best >= target), None)


#: the fractions of the best value found for which the CPU time to reach them is reported
FRACTIONS = (0.90, 0.95, 0.97, TARGET_FRACTION)


def summarise(curves: dict[str, list[list[tuple[float, float]]]], budget: float) -> tuple[str, dict]:
    best_any = max(b for runs in curves.values() for pts in runs for _, b in pts)
    target = TARGET_FRACTION * best_any
    figures: dict[str, dict] = {}
    for strategy, runs in curves.items():
        finals = [pts[-1][1] if pts else float("nan") for pts in runs]
        f = {"finals": finals, "trials": [len(pts) for pts in runs], "fractions": {}}
        for frac in FRACTIONS:
            times = [time_to(pts, frac * best_any) for pts in runs]
            counted = [budget if t is None else t for t in times]
            f["fractions"][frac] = {"times": times, "median": statistics.median(counted),
                                    "reached": sum(t is not None for t in times)}
        f["times"], f["median"] = f["fractions"][TARGET_FRACTION]["times"], f["fractions"][TARGET_FRACTION]["median"]
        figures[strategy] = f

    def cell(f: dict, frac: float) -> str:
        g = f["fractions"][frac]
        shown = f"{g['median']:.0f}" if g["reached"] * 2 > len(g["times"]) else f">= {budget:.0f}"
        return f"{shown} ({g['reached']}/{len(g['times'])})"

    rows = []
    reference = figures.get("random")
    for strategy, f in figures.items():
        ratios = []
        for frac in FRACTIONS:
            mine, ref = f["fractions"][frac], reference["fractions"][frac] if reference else None
            ok = mine["reached"] * 2 > len(mine["times"])
            ratios.append(f"{mine['median'] / ref['median']:.2f}" if ref and ok and ref["reached"] * 2 > len(ref["times"])
                          else ("< 1" if ref and ok else "-"))
        rows.append(f"| `{strategy}` | {len(f['finals'])} | {statistics.fmean(f['finals']):.4f} ± "
                    f"{statistics.pstdev(f['finals']):.4f} | " + " | ".join(cell(f, x) for x in FRACTIONS)
                    + f" | {' / '.join(ratios)} | {statistics.fmean(f['trials']):.1f} |")
    heads = " | ".join(f"CPU s to {x:.0%} (reps reaching)" for x in FRACTIONS)
    table = (f"The best validation value any run found within the budget: {best_any:.4f}; budget {budget:.0f} CPU "
             "seconds per run. CPU seconds to reach a fraction of it: the median over repetitions, a repetition "
             "that never reaches it counted as the budget (shown as >= budget when half or more never do); "
             "the ratio to random search's median where both are measured (< 1: random did not reach it).\n\n"
             f"| strategy | reps | best at the budget (mean ± sd) | {heads} | vs random "
             f"({' / '.join(f'{x:.0%}' for x in FRACTIONS)}) | trials per run |\n"
             "| --- | ---: | ---: | " + " | ".join("---:" for _ in FRACTIONS) + " | ---: | ---: |\n" + "\n".join(rows))
    return table, {"best_any": best_any, "target": target, "budget": budget, "strategies": figures}


def plot(curves: dict[str, list[list[tuple[float, float]]]], budget: float, target: float, path: Path,
         title: str) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.linspace(0, budget, 200)
    fig, ax = plt.subplots(figsize=(8, 5))
    for strategy, runs in curves.items():
        values = []
        for pts in runs:
            row = np.full(grid.shape, np.nan)
            for i, x in enumerate(grid):
                seen = [b for s, b in pts if s <= x and b > float("-inf")]
                if seen:
                    row[i] = seen[-1]
            values.append(row)
        arr = np.array(values)
        with np.errstate(all="ignore"):
            med = np.nanmedian(arr, axis=0)
        (line,) = ax.plot(grid, med, label=f"{strategy} (median of {len(runs)})")
        ax.fill_between(grid, np.nanmin(arr, axis=0), np.nanmax(arr, axis=0), color=line.get_color(), alpha=0.12)
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"{TARGET_FRACTION:.0%} of the best found")
    ax.set_xlabel("cumulative CPU seconds (one thread)")
    ax.set_ylabel("best validation MRR so far")
    ax.set_title(title)
    lows = [b for runs in curves.values() for pts in runs for _, b in pts if b > float("-inf")]
    if lows:
        ax.set_ylim(max(0.0, min(np.percentile(lows, 10), target * 0.8)), max(lows) * 1.02)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=Path("spaces/embedded-campaign.yaml"))
    parser.add_argument("--strategies", default="random,tpe,tpe-median,tpe-hyperband")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cpu-seconds", type=float, default=300.0, help="CPU budget of each run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override (repeatable)")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--record", action="store_true", help="append the figures to docs/benchmarks.md")
    parser.add_argument("--report-only", action="store_true", help="summarise the studies already run")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the studies (default bench/out/search-efficiency/<space>); a benchmark that "
                        "takes more than one sitting keeps them under version control, e.g. campaigns/efficiency-mkg-y")
    args = parser.parse_args()

    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    space = args.space
    label = f"{space.parent.name}-{space.stem}" if space.stem == "space" else space.stem  # campaigns/<name>/space.yaml
    out = args.out or REPO / "bench" / "out" / "search-efficiency" / label
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for rep in range(args.reps):  # interleaved: every strategy's repetition k before any k + 1
            for strategy in strategies:
                run_one(space, strategy, rep, args.cpu_seconds, out, args.overrides)

    from dhns_search.search.storage import make_storage

    if not (out / "studies.journal").is_file():
        raise SystemExit(f"no studies in {out}: run the benchmark without --report-only first")
    storage = make_storage(storage_url(out), create=False)
    curves = {}
    for strategy in strategies:
        runs = []
        for rep in range(args.reps):
            try:
                study = optuna.load_study(study_name=f"{strategy}-{rep}", storage=storage)
            except KeyError:  # this repetition was not run
                continue
            runs.append(curve(study, args.cpu_seconds))
        if runs:
            curves[strategy] = runs
    table, figures = summarise(curves, args.cpu_seconds)
    print(table)
    (out / "figures.json").write_text(json.dumps({"curves": curves, **figures}, indent=1), encoding="utf-8")
    if args.plot is not None:
        plot(curves, args.cpu_seconds, figures["target"], args.plot,
             f"{label}: best validation MRR against CPU time")
    if args.record:
        body = (f"- space: `{space}`" + (f" with {' '.join(args.overrides)}" if args.overrides else "")
                + f"; {args.reps} repetitions (study seeds 0 to {args.reps - 1}); CPU flags: {cpu_flags()}; load "
                f"average at the end: {load_average()}\n\n{table}\n")
        if args.plot is not None:
            shown = args.plot.relative_to("docs") if args.plot.parts[0] == "docs" else args.plot
            body += f"\n![best validation MRR against CPU seconds]({shown})\n"
        append_section(f"Search efficiency: {label}", body)


if __name__ == "__main__":
    main()
