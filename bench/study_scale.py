"""Does the harness stay fast when a study is large?  `status`, `export`, the MLflow leaderboard and the
per-trial overhead of a study of several hundred trials.

Builds a study of ``--trials`` trials (default 300) through the real harness (``run_study``: Optuna storage,
MLflow tracking in SQLite, the parent run's progress after every trial), with a stand-in trainer that
reports 12 evaluations in no time, so that only the harness is measured.  Then times, each ``--repeats``
times (median shown):

- ``dhns-search status STUDY`` and ``dhns-search export STUDY`` as a user runs them (new processes, so
  imports included; ``--help`` is timed too, as the floor of any command);
- the MLflow query behind the leaderboard link (the experiment's runs ordered by the objective, 100 rows);
- the harness overhead per trial (trial wall time minus the stand-in's own) for the first and the last 30
  trials: growth means work that scales with the study's size.

    .venv/bin/python bench/study_scale.py [--trials 300] [--repeats 3] [--record]

Everything goes to ``bench/out/study-scale/`` (the study is reused when it is already there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, append_section, cpu_flags, load_average

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SPACE = """
    description: study-scale benchmark (stand-in trainer)
    fixed:
      data.synth.num_entities: 30
      data.synth.num_triples: 200
      train.epochs: 60
      train.eval_every: 5
    params:
      model.scorer: {type: categorical, choices: [distmult, complex, rotate, transe]}
      model.dim: {type: categorical, choices: [64, 128, 256, 512]}
      train.lr: {type: float, low: 1.0e-3, high: 5.0e-2, log: true}
      negatives.num: {type: categorical, choices: [32, 64, 128]}
      loss.adv_temperature: {type: float, low: 0.0, high: 2.0}
      loss.reg_weight: {type: float, low: 1.0e-8, high: 1.0e-3, log: true}
"""


def stand_in(cfg, *, dataset=None, callbacks=(), run_dir=None):
    """12 evaluations of a smooth made-up curve (the trainer's callback protocol), no training."""
    from dhns_search.training.loop import TrainResult

    history, best = [], (float("-inf"), 0, {})
    peak = 0.2 + 0.1 * (cfg.train.lr * 20) % 1.0
    for epoch in range(cfg.train.eval_every, cfg.train.epochs + 1, cfg.train.eval_every):
        stats = {"train_loss": 1.0 / epoch, "epoch_seconds": 0.001}
        for cb in callbacks:
            cb.on_epoch_end(epoch, stats)
        v = peak * (1 - 0.5 ** (epoch / 10))
        valid = {cfg.train.metric: v, "hits_at_10_realistic_filtered": min(1.0, 2 * v)}
        history.append({"epoch": epoch, **stats, "eval_seconds": 0.0, "valid": valid})
        if v > best[0]:
            best = (v, epoch, valid)
        for cb in callbacks:
            cb.on_evaluation(epoch, valid, history)
    return TrainResult(config=cfg, best_epoch=best[1], best_valid=best[2], test=None, history=history,
                       epochs_run=cfg.train.epochs, seconds=0.001, dataset_fingerprint="stand-in")


def build(out: Path, trials: int) -> tuple[str, str]:
    from dhns_search.search.options import RunOptions
    from dhns_search.search.runner import run_study

    space = out / "scale.yaml"
    space.write_text(textwrap.dedent(SPACE), encoding="utf-8")
    storage, tracking = f"sqlite:///{out / 'studies.db'}", f"sqlite:///{out / 'mlflow.db'}"
    t0 = time.perf_counter()
    summary = run_study(RunOptions(space=space, study="scale", storage=storage, tracking_uri=tracking,
                                   n_trials=trials, work_dir=out / "work"), trainer=stand_in)
    print(f"study: {summary.n_trials} trials, built in {time.perf_counter() - t0:.0f} s", flush=True)
    return storage, tracking


def timed_command(args: list[str], repeats: int, cwd: Path) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dhns_search", *args], cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    import optuna
    from mlflow.tracking import MlflowClient

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = REPO / "bench" / "out" / "study-scale"
    out.mkdir(parents=True, exist_ok=True)
    storage, tracking = build(out, args.trials)
    study = optuna.load_study(study_name="scale", storage=storage)
    n = len(study.trials)

    figures = {
        "--help": timed_command(["--help"], args.repeats, out),
        "status": timed_command(["status", "scale", "--storage", storage], args.repeats, out),
        "export": timed_command(["export", "scale", "--storage", storage, "--out", str(out / "exports"), "--force"],
                                args.repeats, out),
    }
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("scale")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        client.search_runs([experiment.experiment_id], order_by=["metrics.objective DESC"], max_results=100)
        times.append(time.perf_counter() - t0)
    figures["MLflow leaderboard query (100 of the runs)"] = statistics.median(times)
    n_runs = len(client.search_runs([experiment.experiment_id], max_results=5000))

    complete = [t for t in sorted(study.trials, key=lambda t: t.number) if "trial_seconds" in t.user_attrs]
    overhead = [t.user_attrs["trial_seconds"] for t in complete]
    first, last = statistics.median(overhead[:30]), statistics.median(overhead[-30:])

    rows = "\n".join(f"| `{k}` | {v:.2f} |" for k, v in figures.items())
    body = (f"- study: {n} trials (stand-in trainer), {n_runs} MLflow runs in one experiment; repeats "
            f"{args.repeats} (median); CPU flags: {cpu_flags()}; load average: {load_average()}\n\n"
            f"| what | seconds |\n| --- | ---: |\n{rows}\n\n"
            f"Harness overhead per trial (Optuna, MLflow child run, the parent's progress): median "
            f"{first:.2f} s over the first 30 trials, {last:.2f} s over the last 30 ({last / first:.2f}x).\n")
    print(body)
    if args.record:
        append_section(f"Study scale: {args.trials} trials", body)


if __name__ == "__main__":
    main()
