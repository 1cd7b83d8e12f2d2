"""What a campaign needs of `run` and `status`: a CPU budget that the same command continues to, the CPU time
and disk a study spends, and the shipped campaign spaces."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest
from fake_training import fake_run, write_space
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.errors import ConfigError
from dhns_search.search import trial as trial_mod
from dhns_search.search.options import RunOptions
from dhns_search.search.reports import study_cost, study_report
from dhns_search.search.runner import run_study
from dhns_search.search.space import load_space
from dhns_search.search.storage import open_study

ROOT = Path(__file__).resolve().parents[1]
SPACE = """
    description: cpu budget test
    fixed:
      data.synth.num_entities: 30
      data.synth.num_triples: 200
      train.epochs: 2
      train.eval_every: 1
    params:
      train.lr: {type: float, low: 0.001, high: 0.1, log: true}
"""
#: CPU seconds each fake trial "spends" (half an hour)
TRIAL_CPU = 1800.0


@pytest.fixture
def clock(monkeypatch):
    """A fake process CPU clock that only the fake trainer advances."""
    now = [0.0]
    monkeypatch.setattr(trial_mod.time, "process_time", lambda: now[0])
    return now


def _trainer(clock):
    def train(cfg, *, dataset=None, callbacks=(), run_dir=None):
        clock[0] += TRIAL_CPU
        return fake_run(cfg, callbacks, value=lambda epoch: cfg.train.lr * epoch, stats=lambda epoch: {},
                        fingerprint="fake")
    return train


def _options(tmp_path: Path, **kw) -> RunOptions:
    space = write_space(tmp_path, "cpu.yaml", SPACE, [], "warm")
    return RunOptions(space=space, study="cpu", storage=f"sqlite:///{tmp_path / 'studies.db'}", tracking_uri="none",
                      sampler="random", work_dir=tmp_path / "work", **kw)


def test_cpu_budget_ends_the_study_and_the_same_command_continues_to_it(tmp_path, clock):
    first = run_study(_options(tmp_path, cpu_hours=1.2), trainer=_trainer(clock))
    # 0.5 h per trial: after two trials 1.0 h < 1.2 h, so a third one starts; after it 1.5 h >= 1.2 h
    assert first.new_trials == [0, 1, 2] and first.stopped.startswith("CPU budget met (1.50 of 1.2")
    study, _ = open_study("cpu", f"sqlite:///{tmp_path / 'studies.db'}")
    assert [t.user_attrs["cpu_seconds"] for t in study.trials] == [TRIAL_CPU] * 3
    assert study.user_attrs["dhns.cpu_hours"] == 1.2
    # continued without --cpu-hours: the study's own budget, already met; no default trial count applies
    again = run_study(_options(tmp_path), trainer=_trainer(clock))
    assert again.new_trials == [] and again.stopped.startswith("CPU budget met")
    # a larger budget runs the difference
    more = run_study(_options(tmp_path, cpu_hours=2.5), trainer=_trainer(clock))
    assert more.new_trials == [3, 4]
    # with --n-trials too, the first budget met ends the run
    both = run_study(_options(tmp_path, cpu_hours=10.0, n_trials=6), trainer=_trainer(clock))
    assert both.new_trials == [5] and both.stopped == "budget met"


@pytest.mark.parametrize("hours", [0.0, -1.0, float("inf"), float("nan")])
def test_an_impossible_cpu_budget_is_refused_before_a_study_exists(tmp_path, hours):
    with pytest.raises(ConfigError, match="--cpu-hours must be a positive number"):
        run_study(_options(tmp_path, cpu_hours=hours))
    assert not (tmp_path / "studies.db").exists()


def test_status_shows_cpu_hours_and_the_disk_of_trial_folders(tmp_path, clock):
    run_study(_options(tmp_path, cpu_hours=0.9), trainer=_trainer(clock))
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study, _ = open_study("cpu", storage)
    # a trial folder left with a checkpoint (an interrupted trial keeps one) counts towards the disk
    folder = Path(study.trials[0].system_attrs["dhns.run_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.pt").write_bytes(b"x" * 3 * 2**20)
    cost = study_cost(study)
    assert cost.cpu_seconds == 2 * TRIAL_CPU and cost.timed == 2 and cost.untimed == 0
    assert cost.checkpoints == 1 and cost.disk_bytes >= 3 * 2**20
    assert study_report("cpu", storage).cpu_budget == 0.9
    out = CliRunner().invoke(app, ["status", "cpu", "--storage", storage], catch_exceptions=False)
    text = " ".join(out.output.split())  # the console wraps long lines
    assert out.exit_code == 0
    assert "spent: 1 CPU-hours of 0.9 (--cpu-hours)" in text
    assert "trial folders 3.0 MiB on this machine (1 checkpoint(s))" in text


def test_run_command_takes_cpu_hours(tmp_path):
    out = CliRunner().invoke(app, ["run", "--space", str(ROOT / "spaces" / "smoke.yaml"), "--cpu-hours", "0",
                                   "--storage", f"sqlite:///{tmp_path / 's.db'}", "--tracking-uri", "none"])
    assert out.exit_code != 0 and "--cpu-hours must be a positive number of hours (got 0.0)" in " ".join(out.output.split())


@pytest.mark.parametrize("path", sorted((ROOT / "campaigns").glob("*/space.yaml")), ids=lambda p: p.parent.name)
def test_campaign_spaces_are_valid_and_search_both_arms(path):
    space = load_space(path)
    names = {p.name for p in space.params}
    assert {"kgc", "dhns.enabled", "model.dim", "train.lr", "train.lr_schedule"} <= names
    config = space.check_overrides([])
    assert config.data.path is not None and Path(ROOT, config.data.path).is_dir(), \
        f"the campaign's dataset {config.data.path} is not there (the benchmark copies live in ../shared/benchmarks)"
    assert "model.fusion" in names or config.model.fusion == "none"


def test_status_of_a_study_does_not_import_torch(tmp_path, clock):
    """`status` on a large campaign must answer quickly: no trainer import (torch alone takes seconds)."""
    import json

    from test_cli_startup import PROBE, _python

    run_study(_options(tmp_path, cpu_hours=0.4), trainer=_trainer(clock))
    args = ["status", "cpu", "--storage", f"sqlite:///{tmp_path / 'studies.db'}"]
    done = _python("-c", PROBE, json.dumps(args), json.dumps(["torch"]))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, None) and result["heavy"] == []
    assert "spent:" in done.stdout


# ------------------------------------------------------------------ the best trial of each arm of a campaign
ARMS_SPACE = """
    description: best of each arm
    fixed:
      data.synth.num_entities: 30
      data.synth.num_triples: 200
      train.epochs: 2
      train.eval_every: 1
    params:
      train.lr: {type: float, low: 0.001, high: 0.1, log: true}
      dhns.enabled: {type: bool}
"""


@pytest.fixture
def arms_study(tmp_path, clock):
    """A study in which DHNS trials score higher at the same lr (so the overall best is a DHNS trial)."""
    space = write_space(tmp_path, "arms.yaml", ARMS_SPACE, [], "warm")

    def train(cfg, *, dataset=None, callbacks=(), run_dir=None):
        bonus = 0.5 if cfg.dhns.enabled else 0.0
        return fake_run(cfg, callbacks, value=lambda epoch: cfg.train.lr + bonus, stats=lambda epoch: {},
                        fingerprint="fake")

    storage = f"sqlite:///{tmp_path / 'arms.db'}"
    run_study(RunOptions(space=space, study="arms", storage=storage, tracking_uri="none", sampler="random", pruner="none",
                         n_trials=10, work_dir=tmp_path / "work"), trainer=train)
    study, _ = open_study("arms", storage)
    return study, storage


def test_export_where_picks_the_best_trial_of_one_arm(arms_study, tmp_path):
    from dhns_search.search.export import export_trials

    study, storage = arms_study
    uniform = [t for t in study.trials if t.params["dhns.enabled"] is False]
    assert uniform and len(uniform) < len(study.trials)  # both arms were sampled
    best_uniform = max(uniform, key=lambda t: t.value)
    (_, cfg), = export_trials(study, out=tmp_path / "u.yaml", where={"dhns.enabled": "false"})
    assert cfg.provenance["trial"] == best_uniform.number and cfg.dhns.enabled is False
    (_, overall), = export_trials(study, out=tmp_path / "o.yaml")
    assert overall.dhns.enabled is True
    out = CliRunner().invoke(app, ["export", "arms", "--storage", storage, "--where", "dhns.enabled=false",
                                   "--out", str(tmp_path / "cli.yaml")])
    assert out.exit_code == 0 and f"trial {best_uniform.number}" in out.output
    # a misspelt name is an error, not an empty match
    bad = CliRunner().invoke(app, ["export", "arms", "--storage", storage, "--where", "dhns.enable=false"])
    assert bad.exit_code != 0 and "not a parameter of study 'arms'" in " ".join(bad.output.split())
    none = CliRunner().invoke(app, ["export", "arms", "--storage", storage, "--where", "train.lr=7"])
    assert none.exit_code != 0 and "no feasible completed trial with train.lr=7" in " ".join(none.output.split())


def test_ablation_arm_takes_the_best_trial_of_its_arm(arms_study, tmp_path):
    from dhns_search.ablation.spec import arm_config, load_ablation

    study, storage = arms_study
    best_uniform = max((t for t in study.trials if t.params["dhns.enabled"] is False), key=lambda t: t.value)
    path = tmp_path / "ab.yaml"
    path.write_text(f"""
base: preset:dhns-distmult
seeds: 1
reference: uniform
arms:
  uniform: {{base: "study:arms", storage: "{storage}", where: {{dhns.enabled: false}}}}
  dhns: {{base: "study:arms", storage: "{storage}", where: {{dhns.enabled: true}}}}
""", encoding="utf-8")
    spec = load_ablation(path)
    uniform, dhns = arm_config(spec, "uniform"), arm_config(spec, "dhns")
    assert uniform.dhns.enabled is False and uniform.train.lr == pytest.approx(best_uniform.params["train.lr"])
    assert dhns.dhns.enabled is True
    path.write_text("base: preset:dhns-distmult\nreference: a\narms:\n  a: {where: {dhns.enabled: false}}\n  b: {}\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="its base must be study:NAME"):
        arm_config(load_ablation(path), "a")


def test_pruner_startup_sets_the_completed_trials_before_pruning(tmp_path, clock):
    from dhns_search.search.samplers import make_pruner
    from dhns_search.search.study_setup import joined_options

    assert make_pruner("median")._n_startup_trials == 5 and make_pruner("median", 1)._n_startup_trials == 1
    assert make_pruner("percentile", 0)._n_startup_trials == 0
    with pytest.raises(ConfigError, match="--pruner-startup must be >= 0"):
        run_study(_options(tmp_path, cpu_hours=1.0, pruner_startup=-1))
    assert not (tmp_path / "studies.db").exists()

    def counting(cfg, **kw):  # the first trial is good at every epoch, every later one worse: pruned at once
        counting.calls += 1
        value = 1.0 if counting.calls == 1 else 0.1
        clock[0] += 1.0
        return fake_run(cfg, kw.get("callbacks", ()), value=lambda epoch: value, stats=lambda epoch: {},
                        fingerprint="f")
    counting.calls = 0
    summary = run_study(_options(tmp_path, n_trials=3, pruner="median", pruner_startup=1), trainer=counting)
    assert {k: v for k, v in summary.states.items() if v} == {"COMPLETE": 1, "PRUNED": 2}
    study, _ = open_study("cpu", f"sqlite:///{tmp_path / 'studies.db'}")
    assert study.user_attrs["dhns.run"]["pruner_startup"] == 1
    joined = joined_options(RunOptions(study="cpu", storage=f"sqlite:///{tmp_path / 'studies.db'}", join=True))
    assert joined.pruner == "median" and joined.pruner_startup == 1


@pytest.mark.parametrize("name", sorted(n for n in __import__("dhns_search.config", fromlist=["preset_names"])
                                        .preset_names() if n.startswith("tuned-")))
def test_a_tuned_preset_is_the_campaign_trial_it_cites(name, tmp_path):
    """A ``tuned-*`` preset trains what its campaign's journal (committed under campaigns/) recorded for the
    trial its provenance names: the same model, negatives, loss, DHNS and training settings, the trial's
    validation value, and the best epoch as the number of epochs; only the seed and what the preset leaves
    out on purpose (the feature table, unread when nothing fuses features and DHNS is off) may differ."""
    from dhns_search.config import load_config
    from dhns_search.search.export import trial_config

    preset = load_config(preset=name)
    prov = preset.provenance
    campaign = str(prov["study"]).removeprefix("campaign-")
    journal = ROOT / "campaigns" / campaign / "study.journal"
    assert journal.is_file(), f"{name}: its campaign's journal {journal} is not committed"
    study, _ = open_study(prov["study"], f"journal:{journal}")
    trial = study.trials[int(prov["trial"])]
    exported = trial_config(study, trial)
    assert round(exported.provenance["valid_value"], 4) == round(float(prov["valid_value"]), 4), name
    assert preset.train.epochs == exported.train.epochs == prov["best_epoch"], name
    assert preset.dhns.enabled == exported.dhns.enabled, name
    sections = ("model", "negatives", "loss", "train") + (("dhns",) if preset.dhns.enabled else ())  # off: unread
    for section in sections:
        got, want = getattr(preset, section).model_dump(), getattr(exported, section).model_dump()
        assert got == want, f"{name}: {section} differs from trial {prov['trial']} of {prov['study']}"
    assert preset.data.path == exported.data.path, name
    if preset.model.fusion == "none" and not preset.dhns.enabled:
        assert preset.data.features == {} and preset.data.placeholder_features == {}, name
    else:
        assert preset.data.features == exported.data.features, name


@pytest.mark.parametrize("name", sorted(n for n in __import__("dhns_search.config", fromlist=["preset_names"])
                                        .preset_names() if n.startswith("tuned-")))
def test_a_tuned_preset_cites_the_test_mrr_its_committed_comparison_measured(name):
    """The row a ``tuned-*`` preset's header cites is the mean test MRR over at least 3 seeds of one arm of
    the comparison it names (``--out campaigns/...``), whose results are committed."""
    import json
    import re
    import statistics

    text = (ROOT / "dhns_search" / "config" / "presets" / f"{name}.yaml").read_text()
    folder = re.search(r"--out (campaigns/[^\s)]+)", text)
    cited = re.search(r"test MRR (0\.\d{4})", text)
    assert folder and cited, f"{name}: the header names no comparison folder or no test MRR"
    summary = json.loads((ROOT / folder.group(1) / "summary.json").read_text())
    means = {}
    for arm, data in summary["arms"].items():
        values = data["final"]["test"]["mrr_realistic_filtered"]
        if len(data["seeds_done"]) >= 3:
            means[arm] = round(statistics.fmean(values), 4)
    assert float(cited.group(1)) in means.values(), f"{name}: cites {cited.group(1)}, the arms measured {means}"

