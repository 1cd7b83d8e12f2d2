"""Cost-aware search: multi-objective studies (--objective), caps (--max-*), status with the Pareto front,
export --pick, the measurements on trials and MLflow runs; one end-to-end study with the real trainer."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from pathlib import Path

import optuna
import pytest
from fake_training import fake_run, write_space
from mlflow.tracking import MlflowClient
from optuna.study import StudyDirection
from optuna.trial import TrialState
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.config import load_config
from dhns_search.errors import ConfigError, StudyError
from dhns_search.search import pareto, trial_data
from dhns_search.search import runner as runner_mod
from dhns_search.search.export import export_best
from dhns_search.search.options import RunOptions
from dhns_search.search.queries import pareto_front
from dhns_search.search.reports import study_report
from dhns_search.search.runner import run_study
from dhns_search.search.storage import open_study

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
SPACES = Path(__file__).resolve().parents[1] / "spaces"
runner = CliRunner()
MRR = "mrr_realistic_filtered"


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def fake_train(cfg, *, dataset=None, callbacks=(), run_dir=None):
    """Deterministic trainer: validation MRR = train.lr (reached at the last epoch), epoch time = dim / 100."""
    return fake_run(cfg, callbacks, value=lambda epoch: cfg.train.lr * epoch / cfg.train.epochs,
                    stats=lambda epoch: {"epoch_seconds": cfg.model.dim / 100}, fingerprint="fake")


SPACE = """
    fixed:
      data.synth.num_entities: 30
      data.synth.num_triples: 200
      train.epochs: 2
      train.eval_every: 1
    params:
      train.lr: {type: float, low: 0.01, high: 0.5}
      model.dim: {type: categorical, choices: [8, 16, 32, 64]}
"""
#                 mrr   epoch_seconds
# A trial 0   0.10   0.08   front
# B trial 1   0.30   0.16   front, knee (normalised (0.83, 0.86): sum 1.69 against 1 for A and C)
# C trial 2   0.34   0.64   front, best mrr
# D trial 3   0.20   0.32   dominated by B
TRIALS = [{"train.lr": 0.10, "model.dim": 8}, {"train.lr": 0.30, "model.dim": 16},
          {"train.lr": 0.34, "model.dim": 64}, {"train.lr": 0.20, "model.dim": 32}]


@pytest.fixture
def space(tmp_path: Path) -> Path:
    return write_space(tmp_path, "cost.yaml", SPACE, TRIALS, "t")


def opts(tmp_path: Path, space: Path, **kw) -> RunOptions:
    base = {"space": space, "study": "cost", "storage": f"sqlite:///{tmp_path / 'cost.db'}", "tracking_uri": "none",
            "sampler": "random", "n_trials": len(TRIALS),
            "enqueue": [str(tmp_path / f"t{i}.yaml") for i in range(len(TRIALS))]}
    base.update(kw)
    return RunOptions(**base)


def test_multi_objective_study_front_picks_and_mlflow(tmp_path, space, monkeypatch):
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    summary = run_study(opts(tmp_path, space, objectives="mrr,epoch_seconds", tracking_uri=tracking), trainer=fake_train)
    study, _ = open_study("cost", opts(tmp_path, space).storage)
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert [o["name"] for o in study.user_attrs["dhns.objectives"]] == [MRR, "epoch_seconds"]
    assert summary.pruner == "none" and any("pruning is off" in n for n in summary.notes)
    t = study.trials
    assert [x.values for x in t] == [pytest.approx([0.10, 0.08]), pytest.approx([0.30, 0.16]),
                                     pytest.approx([0.34, 0.64]), pytest.approx([0.20, 0.32])]
    assert all(x.intermediate_values == {} for x in t)  # multi-objective: nothing reported, nothing pruned
    assert t[1].user_attrs["epoch_seconds"] == pytest.approx(0.16) and t[1].user_attrs["train_seconds"] > 0
    assert t[1].user_attrs["peak_memory_mb"] > 0 and t[1].user_attrs["peak_memory_kind"] in ("rss", "maxrss")
    # the front, the same as Optuna's own, and its knee
    assert [x.number for x in pareto_front(study).trials] == [0, 1, 2] == sorted(x.number for x in study.best_trials)
    assert summary.front == [(0, pytest.approx([0.10, 0.08])), (1, pytest.approx([0.30, 0.16])),
                             (2, pytest.approx([0.34, 0.64]))]
    assert summary.knee_trial == 1 and summary.best_trial == 2

    # picks through the library
    out = tmp_path / "exports"
    for pick, trial in [("knee", 1), ("best-mrr", 2), ("best-epoch_seconds", 0), ("fastest-within 0.05", 1),
                        ("fastest-within 0.01", 2), ("fastest-within 0.3", 0), (None, 1)]:
        (path, cfg), = export_best("cost", storage=opts(tmp_path, space).storage, pick=pick, out=out / "x.yaml",
                                     force=True)  # the same file each time
        assert cfg.provenance["trial"] == trial, pick
        assert cfg.provenance["pick"] == (pick or "knee")
        assert cfg.model.dim == TRIALS[trial]["model.dim"] and cfg.train.lr == TRIALS[trial]["train.lr"]
        assert cfg.train.epochs == 2 and cfg.seed == study.trials[trial].user_attrs["seed"]
        assert path.read_text().startswith(f"# Exported by dhns-search from study 'cost', trial {trial}, chosen by "
                                           f"--pick {pick or 'knee'}:")
    assert cfg.provenance["valid_value"] == pytest.approx(0.30)
    assert cfg.provenance["objectives"].startswith(f"{MRR}=0.3 (max), epoch_seconds=0.16 (min)")
    # --top on a multi-objective study ranks by the primary objective
    assert [c.provenance["trial"] for _, c in export_best("cost", storage=opts(tmp_path, space).storage, top=2,
                                                          out=out / "top.yaml")] == [2, 1]

    # MLflow: the measurements on each child, the knee as the parent's best config, a Pareto plot
    client = MlflowClient(tracking)
    child = client.get_run(t[1].user_attrs["mlflow_run_id"])
    assert child.data.metrics["mean_epoch_seconds"] == pytest.approx(0.16)
    assert {"train_seconds", "peak_memory_mb"} <= set(child.data.metrics)
    assert child.data.tags["dhns.values"].startswith(f"{MRR}=0.3")
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.tags["dhns.knee_trial"] == "1" and parent.data.tags["dhns.pareto_trials"] == "0,1,2"
    assert parent.data.metrics["pareto_size"] == 3
    plots = {a.path for a in client.list_artifacts(summary.parent_run_id, "plots")}
    assert "plots/pareto_front.png" in plots and "plots/optimization_history.png" in plots
    assert "plots/interactive.html" in plots
    best_cfg = client.download_artifacts(summary.parent_run_id, "best_config.yaml", str(tmp_path))
    assert load_config(best_cfg).provenance["trial"] == 1

    # status shows the front with the picks, and writes the Pareto plot
    report = study_report("cost", opts(tmp_path, space).storage)
    assert [r.number for r in report.front] == [0, 1, 2] and report.knee_trial == 1
    assert {r.number: r.picks for r in report.front} == {0: ["best-epoch_seconds"], 1: ["knee"], 2: ["best-mrr"]}
    monkeypatch.setenv("COLUMNS", "200")
    shown = invoke("status", "cost", "--storage", opts(tmp_path, space).storage, "--plot", tmp_path / "front.png")
    assert shown.exit_code == 0, shown.output
    assert "Pareto front: 3 of 4 feasible completed trials" in shown.output
    assert "mrr (max)" in shown.output and "epoch_seconds (min)" in shown.output
    knee_line = next(line for line in shown.output.splitlines() if "knee" in line and "│" in line)
    assert knee_line.split("│")[1].strip() == "1"
    assert (tmp_path / "front.png").stat().st_size > 10_000


def test_continuing_keeps_objectives_and_refuses_other_ones(tmp_path, space):
    run_study(opts(tmp_path, space, objectives="mrr,epoch_seconds", n_trials=1, enqueue=[]), trainer=fake_train)
    with pytest.raises(StudyError, match=r"created with the objectives mrr \(max\), epoch_seconds \(min\); "
                                         r"--objective gives mrr \(max\)"):
        run_study(opts(tmp_path, space, objectives="mrr", n_trials=1, enqueue=[]), trainer=fake_train)
    with pytest.raises(StudyError, match="created with no caps"):
        run_study(opts(tmp_path, space, max_epoch_seconds=1.0, n_trials=1, enqueue=[]), trainer=fake_train)
    with pytest.raises(ConfigError, match="--pruner median: Optuna's pruners compare one value"):
        run_study(opts(tmp_path, space, pruner="median", n_trials=1, enqueue=[]), trainer=fake_train)
    with pytest.raises(ConfigError, match="--sampler cmaes optimises a single objective"):
        run_study(opts(tmp_path, space, sampler="cmaes", n_trials=1, enqueue=[]), trainer=fake_train)
    study, _ = open_study("cost", opts(tmp_path, space).storage)
    assert len(study.trials) == 1  # none of the refused runs added a trial
    # without --objective, a continued study keeps its own objectives (--n-trials: the study's budget)
    summary = run_study(opts(tmp_path, space, n_trials=2, enqueue=[], sampler="nsga2"), trainer=fake_train)
    study, _ = open_study("cost", opts(tmp_path, space).storage)
    assert summary.new_trials == [1] and len(study.trials[1].values) == 2
    # a single-objective study does not become a multi-objective one either
    run_study(opts(tmp_path, space, study="single", n_trials=1, enqueue=[]), trainer=fake_train)
    with pytest.raises(StudyError, match=r"created with the objectives mrr \(max\)"):
        run_study(opts(tmp_path, space, study="single", objectives="mrr,epoch_seconds", n_trials=1, enqueue=[]),
                  trainer=fake_train)


def test_caps_mark_trials_infeasible_and_picks_skip_them(tmp_path, space, monkeypatch):
    class PruneDim32(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.params.get("model.dim") == 32 and (trial.last_step or 0) >= 1

    # single objective with a cap at 0.5 s per epoch: C (0.64 s) is infeasible, D is pruned
    monkeypatch.setattr(runner_mod, "make_pruner", lambda *_: PruneDim32())
    summary = run_study(opts(tmp_path, space, sampler="tpe", max_epoch_seconds=0.5), trainer=fake_train)
    study, _ = open_study("cost", opts(tmp_path, space).storage)
    t = study.trials
    assert study.user_attrs["dhns.caps"] == {"epoch_seconds": 0.5}
    assert [x.state for x in t] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    # Optuna's own constraint records: system attr "constraints:<name>", measured - cap
    assert t[2].system_attrs["constraints:epoch_seconds"] == pytest.approx(0.14)
    assert t[0].constraints == {"epoch_seconds": pytest.approx(-0.42)}
    assert t[3].constraints == {"epoch_seconds": pytest.approx(-0.18)}  # pruned: what it measured
    assert summary.best_trial == 1 and summary.n_infeasible == 1  # C has the best MRR but breaks the cap
    assert study.best_trial.number == 1  # Optuna agrees
    report = study_report("cost", opts(tmp_path, space).storage)
    assert [r.number for r in report.rows] == [1, 0]
    assert report.infeasible == [(2, pytest.approx(0.34), "epoch_seconds 0.64 > 0.5")]
    shown = invoke("status", "cost", "--storage", opts(tmp_path, space).storage)
    assert "caps: epoch_seconds <= 0.5; 2 feasible, 1 infeasible" in " ".join(shown.output.split())
    assert "infeasible trial 2" in shown.output
    assert [c.provenance["trial"] for _, c in export_best("cost", storage=opts(tmp_path, space).storage, top=3,
                                                          out=tmp_path / "e/")] == [1, 0]

    # a cap nothing meets: the trials are stored, export says why there is nothing to export
    tiny = opts(tmp_path, space, study="tiny", max_epoch_seconds=1e-7, n_trials=2, objectives="mrr,epoch_seconds")
    run_study(tiny, trainer=fake_train)
    study, _ = open_study("tiny", tiny.storage)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2 and all(x.constraints["epoch_seconds"] > 0 for x in done) and study.best_trials == []
    res = runner.invoke(app, ["export", "tiny", "--storage", tiny.storage, "--pick", "knee"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.count("error:") == 1
    msg = " ".join(res.output.split())
    assert "no feasible completed trial to export: all 2 completed trials break the caps (epoch_seconds <= 1e-07)" in msg
    assert "trial 0: epoch_seconds 0.08 > 1e-07" in msg


def test_cli_errors_for_objectives_and_picks(tmp_path, space, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = runner.invoke(app, ["run", "--space", str(space), "--objective", "mrr,bogus", "--no-live"])
    assert bad.exit_code == 2 and bad.output.count("error:") == 1 and "Traceback" not in bad.output
    assert "unknown objective 'bogus'" in bad.output and not (tmp_path / "studies").exists()
    cap = runner.invoke(app, ["run", "--space", str(space), "--max-memory-mb", "-3", "--no-live"])
    assert cap.exit_code == 2 and "--max-memory-mb must be a positive number" in cap.output

    storage = f"sqlite:///{tmp_path / 'cost.db'}"
    run_study(opts(tmp_path, space, study="one", storage=storage), trainer=fake_train)  # single objective
    run_study(opts(tmp_path, space, storage=storage, objectives="mrr,epoch_seconds"), trainer=fake_train)
    knee = runner.invoke(app, ["export", "one", "--storage", storage, "--pick", "knee"])
    assert knee.exit_code == 2 and "has a single objective (mrr (max))" in " ".join(knee.output.split())
    best = invoke("export", "one", "--storage", storage, "--pick", "best-mrr", "--out", "one.yaml")
    assert best.exit_code == 0, best.output
    assert load_config(tmp_path / "one.yaml").provenance["trial"] == 2  # the best MRR of all four
    # the spelling: --pick fastest-within 0.05 (two words)
    fast = invoke("export", "cost", "--storage", storage, "--pick", "fastest-within", "0.05", "--out", "f.yaml")
    assert fast.exit_code == 0, fast.output
    cfg = load_config(tmp_path / "f.yaml")
    assert cfg.provenance["trial"] == 1 and cfg.provenance["pick"] == "fastest-within 0.05"
    for args, message in [(["--pick", "best-hits@10"], "the study's objectives are mrr (max), epoch_seconds (min)"),
                          (["--pick", "knee", "--top", "2"], "give one of them"),
                          (["0.1"], "only --pick fastest-within takes a value"),
                          (["--pick", "fastest"], "use knee, best-<objective>")]:
        res = runner.invoke(app, ["export", "cost", "--storage", storage, *args])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)
    listing = invoke("status", "--storage", storage)
    assert "2 objectives: front 3, knee #1" in " ".join(listing.output.split())


# ------------------------------------------------------------------------ end to end, real trainer
@pytest.mark.slow
def test_end_to_end_multi_objective_smoke_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    res = invoke("run", "--space", SPACES / "smoke.yaml", "--n-trials", "3", "--objective", "mrr,epoch_seconds",
                 "--tracking-uri", "none", "--no-live")
    assert res.exit_code == 0, res.output
    assert "pruning is off" in " ".join(res.output.split()) and "Pareto front:" in res.output

    study, _ = open_study("smoke")
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert all(t.state == TrialState.COMPLETE for t in study.trials) and len(study.trials) == 3
    for t in study.trials:
        assert t.values[0] == trial_data.read(t, "best_valid")[MRR]
        assert t.values[1] == pytest.approx(t.user_attrs["epoch_seconds"], abs=1e-6) and t.values[1] > 0
        assert t.values[1] < t.user_attrs["train_seconds"]  # an epoch is part of the training time
    front = sorted(t.number for t in study.best_trials)
    points = [list(study.trials[n].values) for n in front]
    knee = front[pareto.knee(points, ["maximize", "minimize"])]

    shown = invoke("status", "smoke")
    assert shown.exit_code == 0 and f"Pareto front: {len(front)} of 3 feasible" in shown.output
    rows = [line.split("│") for line in shown.output.splitlines() if line.startswith("│")]
    assert sorted(int(r[1]) for r in rows if r[1].strip()) == front
    assert any(r[1].strip() == str(knee) and any("knee" in cell for cell in r) for r in rows)

    out = invoke("export", "smoke", "--pick", "knee", "--out", "knee.yaml")
    assert out.exit_code == 0, out.output
    cfg = load_config("knee.yaml")
    trial = study.trials[knee]
    assert cfg.provenance["trial"] == knee and cfg.provenance["pick"] == "knee"
    assert cfg.provenance["valid_value"] == trial.values[0]
    assert cfg.train.epochs == trial.user_attrs["best_epoch"] and cfg.seed == trial.user_attrs["seed"]
    assert cfg.model.scorer == trial.params["model.scorer"] and cfg.train.lr == trial.params["train.lr"]
