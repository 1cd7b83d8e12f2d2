"""dhns-search compare: paired ablations over seeds on the embedded graph, checked against a direct
computation of the paired differences; resuming, refusing a changed folder, interruption."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stopping import StopAfter
from typer.testing import CliRunner

from dhns_search.ablation import load_ablation, paired_difference, run_ablation
from dhns_search.cli import app
from dhns_search.config import load_config
from dhns_search.errors import ConfigError
from dhns_search.tracking.metrics import rounded
from dhns_search.training.loop import TrainingInterrupted

TINY = """
description: two arms on the embedded graph
base: preset:dhns-distmult
set:
  model.dim: 16
  model.fusion: none
  negatives.num: 8
  dhns.steps: 10
  train.epochs: 2
  train.eval_every: 1
  train.batch_size: 2048
  train.lr: 0.02
seeds: [3, 7]
reference: uniform
metrics: [mrr_realistic_filtered, hits_at_10_realistic_filtered]
arms:
  uniform: {set: {dhns.enabled: false}}
  diffusion: {set: {dhns.kgc_diffusion_weight: 1.0, dhns.weight: 0.0}}
"""

# two-sided 95% quantiles of Student's t (statistical tables), for a direct computation of the interval
T975 = {1: 12.706204736174698, 2: 4.302652729911275}


def _interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    d = [x - y for x, y in zip(a, b)]
    m, half = statistics.fmean(d), T975[len(d) - 1] * statistics.stdev(d) / math.sqrt(len(d))
    return m, m - half, m + half


def test_paired_difference_is_the_paired_t_interval():
    a, b = [0.31, 0.29, 0.35], [0.30, 0.27, 0.31]
    diff = paired_difference(a, b)
    m, low, high = _interval(a, b)
    assert diff.n == 3 and diff.mean == pytest.approx(m, abs=1e-12)
    assert (diff.low, diff.high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert diff.significant == (low > 0 or high < 0)
    one = paired_difference([0.5], [0.4])
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.low) and "1 seed" in one.text()
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    (root / "tiny.yaml").write_text(TINY)
    out = root / "out"
    result = CliRunner().invoke(app, ["compare", str(root / "tiny.yaml"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return root, out, result.output


def test_two_arms_two_seeds_match_a_direct_computation(compared):
    _, out, output = compared
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [3, 7] and summary["reference"] == "uniform"
    results = {arm: [json.loads((out / arm / f"seed-{s}" / "result.json").read_text()) for s in (3, 7)]
               for arm in ("uniform", "diffusion")}
    assert [r["seed"] for r in results["diffusion"]] == [3, 7]
    for split in ("valid", "test"):
        for metric in ("mrr_realistic_filtered", "hits_at_10_realistic_filtered"):
            a = [r[split][metric] for r in results["diffusion"]]
            b = [r[split][metric] for r in results["uniform"]]
            got = summary["differences"]["diffusion"][f"final/{split}/{metric}"]
            m, low, high = _interval(a, b)
            assert got["mean"] == pytest.approx(m, abs=1e-12) and got["n"] == 2
            assert (got["low"], got["high"]) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
            assert summary["arms"]["diffusion"]["final"][split][metric] == a
    # learning curves: the validation MRR of every seed at every evaluated epoch, paired the same way
    for epoch in (1, 2):
        a = [h["valid"]["mrr_realistic_filtered"] for s in (3, 7) for h in
             json.loads((out / "diffusion" / f"seed-{s}" / "metrics.json").read_text()) if h["epoch"] == epoch]
        b = [h["valid"]["mrr_realistic_filtered"] for s in (3, 7) for h in
             json.loads((out / "uniform" / f"seed-{s}" / "metrics.json").read_text()) if h["epoch"] == epoch]
        got = summary["differences"]["diffusion"][f"curve/valid/mrr_realistic_filtered/{epoch}"]
        assert got["mean"] == pytest.approx(_interval(a, b)[0], abs=1e-12)
    md = (out / "comparison.md").read_text()
    assert "## Paired differences against `uniform`" in md and "| `diffusion` |" in md
    from dhns_search.ablation.stats import mean_interval  # each arm's test metrics with their t-interval

    test_mrr = [r["test"]["mrr_realistic_filtered"] for r in results["diffusion"]]
    assert f"| `diffusion` | {mean_interval(test_mrr).text()} |" in md
    assert (out / "curves.png").stat().st_size > 10_000
    assert "Paired differences" in output


def test_running_again_trains_nothing_and_a_changed_arm_is_refused(compared):
    root, out, _ = compared
    before = (out / "summary.json").read_text()
    again = CliRunner().invoke(app, ["compare", str(root / "tiny.yaml"), "--out", str(out), "--no-progress"])
    assert again.exit_code == 0 and "training ->" not in again.output and "resuming" not in again.output
    assert json.loads((out / "summary.json").read_text())["differences"] == json.loads(before)["differences"]
    changed = CliRunner().invoke(app, ["compare", str(root / "tiny.yaml"), "--out", str(out), "--no-progress",
                                       "--set", "train.lr=0.01"])
    assert changed.exit_code == 2
    assert "was run with another configuration (train.lr: 0.02 -> 0.01)" in changed.output
    noted = CliRunner().invoke(app, ["compare", str(root / "tiny.yaml"), "--out", str(out), "--no-progress",
                                     "--set", "provenance={note: where it came from}"])  # not what trains
    assert noted.exit_code == 0 and "training ->" not in noted.output, noted.output
    assert json.loads((out / "summary.json").read_text())["differences"] == json.loads(before)["differences"]


def test_an_interrupted_comparison_resumes_where_it_stopped(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY.replace("seeds: [3, 7]", "seeds: [3]"))
    started = []
    with pytest.raises(TrainingInterrupted):
        run_ablation(tmp_path / "tiny.yaml", out=tmp_path / "out", progress=False, stop=StopAfter(3),
                     on_start=lambda record, resumed: started.append((record.arm, resumed)))
    summary = run_ablation(tmp_path / "tiny.yaml", out=tmp_path / "out", progress=False,
                           on_start=lambda record, resumed: started.append((record.arm, resumed)))
    # uniform seed 3 ran 2 epochs of 3 batches: stopped after 3 batches, resumed, then the other arm
    assert started == [("uniform", False), ("uniform", True), ("diffusion", False)]
    assert all(a.seeds_done == [3] for a in summary.arms.values())


def test_ablation_files_are_validated():
    with pytest.raises(ConfigError, match="reference 'nope' is not one of the arms"):
        from dhns_search.ablation import AblationSpec
        from dhns_search.config.io import validate_model

        validate_model(AblationSpec, {"reference": "nope", "arms": {"a": {}, "b": {}}}, "x.yaml")
    for name in ("mkg-y", "embedded"):
        spec = load_ablation(Path(__file__).resolve().parents[1] / "ablations" / f"{name}.yaml")
        assert {"uniform", "negatives", "diffusion", "both", "released"} <= set(spec.arms)


def test_a_comparison_in_mlflow_has_one_parent_and_one_child_per_arm_and_seed(compared, tmp_path):
    from mlflow.tracking import MlflowClient

    root, out, _ = compared
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for _ in range(2):  # all runs finished: logging only, and a second time adds nothing
        result = CliRunner().invoke(app, ["compare", str(root / "tiny.yaml"), "--out", str(out), "--no-progress",
                                          "--tracking-uri", uri])
        assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("compare-tiny")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("dhns.role") == "comparison"]
    children = [r for r in runs if r.data.tags.get("dhns.role") == "arm"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted((r.data.tags["dhns.arm"], r.data.tags["dhns.seed"]) for r in children) == [
        ("diffusion", "3"), ("diffusion", "7"), ("uniform", "3"), ("uniform", "7")]
    parent = parents[0]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"
               for r in children)
    child = next(r for r in children if r.data.tags["dhns.arm"] == "diffusion" and r.data.tags["dhns.seed"] == "7")
    result_json = json.loads((out / "diffusion" / "seed-7" / "result.json").read_text())
    # metrics to 4 significant digits (the exact values are in the run folder's result.json)
    assert child.data.metrics["final_test_mrr"] == rounded(result_json["test"]["mrr_realistic_filtered"])
    history = client.get_metric_history(child.info.run_id, "valid_mrr")
    assert [m.step for m in history] == [1, 2]
    params = list(child.data.params)
    assert child.data.params["dhns.kgc_diffusion_weight"] == "1.0" and child.data.params["zconfig.seed"] == "7"
    assert all(not p.startswith("zconfig.") for p in params if p in ("dhns.weight", "model.dim"))
    assert child.inputs.dataset_inputs and child.inputs.dataset_inputs[0].dataset.name == "synthetic"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.md", "summary.json", "curves.png"} <= artifacts
    summary = json.loads((out / "summary.json").read_text())
    diff = summary["differences"]["diffusion"]["final/test/mrr_realistic_filtered"]["mean"]
    assert parent.data.metrics["diffusion.diff_test_MRR"] == rounded(diff)
    assert "Paired differences" in parent.data.tags["mlflow.note.content"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_stops_compare_with_128_plus_the_signal_and_the_continue_command(tmp_path, monkeypatch, sig):
    import os
    import signal

    from dhns_search import ablation

    number = getattr(signal, sig)

    def interrupted_run(*args, stop, **kwargs):  # the signal arrives during training; the run stops cleanly
        os.kill(os.getpid(), number)
        assert stop.wait(5)
        raise TrainingInterrupted(1, 2, None)

    monkeypatch.setattr(ablation, "run_ablation", interrupted_run)
    (tmp_path / "tiny.yaml").write_text(TINY)
    # whatever this process inherited (a background job of a non-interactive shell ignores SIGINT), the
    # command installs its own handlers and puts back what was there
    before = signal.getsignal(number)
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "tiny.yaml"), "--no-progress"])
    assert result.exit_code == 128 + number, result.output
    assert "interrupted at epoch 1, batch 2" in result.output and "continue with: dhns-search" in result.output
    assert signal.getsignal(number) is before  # handlers restored


def test_a_misspelt_metric_is_refused_when_the_file_is_read(tmp_path, synth_dataset):
    from dhns_search.ablation.spec import evaluation_metric_names
    from dhns_search.evaluation import FilteredEvaluator
    from dhns_search.models import KGEModel

    path = tmp_path / "a.yaml"
    path.write_text("reference: a\nmetrics: [mrr_realistic_filtered, hits_at_10_realistc_filtered]\n"
                    "arms: {a: {}, b: {}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="did you mean 'hits_at_10_realistic_filtered'"):
        load_ablation(path)
    # the names accepted are exactly those the evaluator reports
    cfg = load_config(preset="uniform-distmult", overrides=["model.dim=8"])
    model = KGEModel.from_config(cfg, synth_dataset)
    result = FilteredEvaluator([synth_dataset.train, synth_dataset.valid, synth_dataset.test],
                               synth_dataset.num_entities).evaluate(model, synth_dataset.valid[:20])
    assert set(result) - {"num_triples"} == evaluation_metric_names()


def test_metric_labels_name_the_rank_policy_only_when_two_columns_would_read_alike():
    from dhns_search.ablation.report import metric_label

    both = ["mrr_realistic_filtered", "mrr_optimistic_filtered", "hits_at_10_realistic_filtered"]
    assert [metric_label(m, both) for m in both] == ["MRR (realistic)", "MRR (optimistic)", "H@10"]
    assert metric_label("mrr_realistic_filtered", ["mrr_realistic_filtered", "hits_at_1_realistic_filtered"]) == "MRR"
    assert metric_label("mrr_realistic_raw", ["mrr_realistic_raw", "mrr_realistic_filtered"]) == "MRR (realistic, raw)"


def test_the_mean_interval_is_the_student_t_interval():
    from dhns_search.ablation.stats import mean_interval

    got = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: t(0.975, 2) = 4.302652729911275
    half = 4.302652729911275 / 3 ** 0.5
    assert (got.mean, got.n) == (2.0, 3) and got.low == pytest.approx(2 - half) and got.high == pytest.approx(2 + half)
    assert got.text(2) == "2.00 [-0.48, 4.48]"
    assert mean_interval([0.5]).text() == "0.5000 (1 seed)" and mean_interval([]).text() == "-"


def _compare_process(root: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "dhns_search", "compare", str(root / "tiny.yaml"), "--out", str(out),
                             "--no-progress"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_a_run_another_process_holds_is_left_to_it_and_taken_up_last(compared, tmp_path):
    """While another process holds a run's lock, compare trains every other run first, then waits for the
    lock and trains that one itself when the holder let it go unfinished; the results are bit for bit
    those of a comparison in one process."""
    from dhns_search.files import file_lock

    _, sequential, _ = compared
    (tmp_path / "tiny.yaml").write_text(TINY)
    out = tmp_path / "out"
    held = file_lock(out / "diffusion" / "seed-3", timeout=0)
    held.acquire()
    proc = _compare_process(tmp_path, out)
    others = [out / arm / f"seed-{s}" / "result.json" for arm, s in (("uniform", 3), ("uniform", 7), ("diffusion", 7))]
    deadline = time.monotonic() + 240
    try:
        while not all(p.is_file() for p in others):
            assert proc.poll() is None and time.monotonic() < deadline, "the free runs did not finish"
            time.sleep(0.2)
        time.sleep(1.0)
        assert proc.poll() is None, "compare ended without the held run"
        assert not (out / "diffusion" / "seed-3" / "config.yaml").exists()  # not started while held
    finally:
        held.release()
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "diffusion seed 3: another process is training it" in output
    assert output.count("training ->") == 4
    for arm in ("uniform", "diffusion"):
        for s in (3, 7):
            got = json.loads((out / arm / f"seed-{s}" / "result.json").read_text())
            want = json.loads((sequential / arm / f"seed-{s}" / "result.json").read_text())
            assert got["test"] == want["test"] and got["valid"] == want["valid"], (arm, s)
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary["arms"][a]["seeds_done"] == [3, 7] for a in ("uniform", "diffusion"))


def test_two_processes_on_one_comparison_train_each_run_once_and_report_it_all(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    out = tmp_path / "out"
    procs = [_compare_process(tmp_path, out) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(o.count("training ->") for o in outputs) == 4, outputs  # each of the 2 arms x 2 seeds once
    for o in outputs:  # both print the whole report: every arm with both seeds done
        assert "| `uniform` | 2/2 |" in o and "| `diffusion` | 2/2 |" in o, o
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary["arms"][a]["seeds_done"] == [3, 7] for a in ("uniform", "diffusion"))


def test_a_stop_request_while_waiting_for_another_process_ends_compare_as_interrupted(tmp_path):
    import threading

    from dhns_search.ablation import prepare, run_comparison
    from dhns_search.ablation.runner import StoppedWaiting
    from dhns_search.files import file_lock

    (tmp_path / "tiny.yaml").write_text(TINY)
    comparison = prepare(load_ablation(tmp_path / "tiny.yaml"), tmp_path / "out", name="tiny")
    locks = [file_lock(r.path, timeout=0) for r in comparison.runs.values()]
    for lock in locks:  # every run held by "another process"
        lock.acquire()
    busy, stop = [], threading.Event()
    threading.Timer(1.0, stop.set).start()
    try:
        with pytest.raises(StoppedWaiting, match="another process trains arm 'uniform' seed 3"):
            run_comparison(comparison, progress=False, stop=stop, on_busy=busy.append, poll=0.1)
    finally:
        for lock in locks:
            lock.release()
    assert [(r.arm, r.seed) for r in busy] == [("uniform", 3), ("diffusion", 3), ("uniform", 7), ("diffusion", 7)]
    assert isinstance(StoppedWaiting(busy[0]), TrainingInterrupted)  # the CLI reports it as an interruption
    assert not any(r.path.exists() for r in comparison.runs.values())


def test_a_folder_made_before_a_setting_existed_reads_it_as_its_default(compared, tmp_path):
    import shutil

    from dhns_search.ablation import prepare
    from dhns_search.config.io import read_yaml_mapping, write_yaml

    root, out, _ = compared
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for arm in ("uniform", "diffusion"):
        written = read_yaml_mapping(copy / arm / "config.yaml")
        for key in ("valid_split", "valid_holdout"):  # as an older dhns-search wrote it
            del written["data"][key]
        write_yaml(written, copy / arm / "config.yaml")
    spec = load_ablation(root / "tiny.yaml")
    comparison = prepare(spec, copy, name="tiny")
    assert all(r.done for r in comparison.runs.values())
    with pytest.raises(ConfigError, match="valid_split"):  # a real difference is still refused
        prepare(spec, copy, name="tiny", overrides=["data.valid_split=file"])
