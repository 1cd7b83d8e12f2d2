"""dhns-search train through Typer's CliRunner: table, run folder, seeds, errors."""

import json

from typer.testing import CliRunner

from dhns_search.cli import app

FAST = ["--set", "train.epochs=2", "--set", "train.eval_every=1", "--set", "model.dim=16",
        "--set", "train.batch_size=4096", "--set", "train.progress=false"]


def test_train_preset_prints_metrics_and_writes_run_folder(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--preset", "uniform-distmult", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert "mrr_realistic_filtered" in res.output and "validation" in res.output
    assert {"config.yaml", "metrics.json", "checkpoint.pt", "result.json"} <= {p.name for p in out.iterdir()}
    assert len(json.loads((out / "metrics.json").read_text())) == 2


def test_train_seeds_reports_mean_and_std(tmp_path):
    res = CliRunner().invoke(app, ["train", "--preset", "uniform-distmult", "--seeds", "2", "--out", str(tmp_path), *FAST])
    assert res.exit_code == 0, res.output
    assert "±" in res.output and (tmp_path / "seed-0").is_dir() and (tmp_path / "seed-1").is_dir()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == 2 and "test/mrr_realistic_filtered" in summary["std"]


def test_train_errors_are_one_message():
    runner = CliRunner()
    res = runner.invoke(app, ["train"])
    assert res.exit_code == 2 and "give --config FILE or --preset NAME" in res.output
    res = runner.invoke(app, ["train", "--preset", "dhns-rotate", "--set", "train.lrr=1"])
    assert res.exit_code == 2 and "train.lrr: unknown key" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train", "--preset", "uniform-distmult", *FAST, "--set", "loss.reg_weight=1.0e308"])
    assert res.exit_code == 3 and "loss is inf" in res.output
