"""Bad input refused with one clear message, exit code 2 and nothing stored changed: space files with
infinite or NaN bounds, equal bounds, one choice, binary content; a study continued with an edited space;
``train --out`` onto a run folder and ``export --out`` onto a file without ``--force``.  And the way
out: ``train --resume RUN_DIR`` continues an interrupted run to where an uninterrupted one ends."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import optuna
import pytest
from fake_training import fake_run
from mlflow.tracking import MlflowClient
from stopping import StopAfter
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.config import load_config
from dhns_search.errors import ConfigError
from dhns_search.search.storage import make_storage
from dhns_search.training.loop import TrainingInterrupted, train

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
runner = CliRunner()

SPACE = """
    fixed: {{data.synth.num_entities: 30, data.synth.num_triples: 200, train.epochs: 2, train.eval_every: 1}}
    params:
      train.lr: {{type: float, low: 0.001, high: {high}, log: true}}
      model.scorer: {{type: categorical, choices: {choices}}}
"""


def _space(folder: Path, high: str = "0.1", choices: str = "[distmult, rotate]") -> Path:
    path = folder / "bad.yaml"
    path.write_text(textwrap.dedent(SPACE.format(high=high, choices=choices)), encoding="utf-8")
    return path


def _refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output and result.output.count("error:") == 1


@pytest.mark.parametrize(("high", "choices", "message"), [
    (".inf", "[distmult, rotate]", "params.train.lr: high must be a finite number (got inf)"),
    (".nan", "[distmult, rotate]", "params.train.lr: high must be a finite number (got nan)"),
    ("0.001", "[distmult, rotate]", "params.train.lr: low equals high (0.001): nothing to search"),
    ("0.1", "[distmult]", "params.model.scorer: one choice ('distmult') searches nothing"),
], ids=["inf", "nan", "low-equals-high", "one-choice"])
def test_a_bad_space_file_is_refused_before_anything_exists(tmp_path, monkeypatch, high, choices, message):
    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path, high, choices)
    _refused(runner.invoke(app, ["run", "--space", str(space), "--no-live"]), message)
    _refused(runner.invoke(app, ["spaces", "validate", str(space)]), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no studies/, no mlruns/


def test_a_binary_space_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\x00\x01\x02\xff\xfe")
    _refused(runner.invoke(app, ["run", "--space", "bin.yaml", "--no-live"]), "binary data, not a text file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.yaml"]


def fake_train(cfg, *, dataset=None, callbacks=(), run_dir=None):
    return fake_run(cfg, callbacks, value=lambda e: cfg.train.lr * e, stats=lambda e: {"epoch_seconds": 0.01},
                    fingerprint="fake")


def test_a_study_continued_with_an_edited_space_is_refused_naming_the_change(tmp_path, monkeypatch):
    from dhns_search.search.options import RunOptions
    from dhns_search.search.runner import run_study

    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    run_study(RunOptions(space=space, study="edited", n_trials=2, sampler="random", pruner="none",
                         tracking_uri=tracking), trainer=fake_train)
    storage = make_storage(f"sqlite:///{tmp_path / 'studies' / 'studies.db'}")
    before = optuna.load_study(study_name="edited", storage=storage)
    trials_before, attrs_before = [(t.number, t.state) for t in before.trials], dict(before.user_attrs)
    client = MlflowClient(tracking)
    runs_before = {r.info.run_id: r.info.status for r in client.search_runs([client.get_experiment_by_name(
        "edited").experiment_id])}

    _space(tmp_path, high="0.5", choices="[distmult, transe]")  # the user edits the space
    result = runner.invoke(app, ["run", "--space", str(space), "--study", "edited", "-n", "4", "--no-live",
                                 "--tracking-uri", tracking])
    _refused(result, "was created with another search space")
    assert "parameter train.lr: high 0.1 -> 0.5" in result.output
    assert "parameter model.scorer: choices ['distmult', 'rotate'] -> ['distmult', 'transe']" in result.output
    after = optuna.load_study(study_name="edited", storage=storage)
    assert [(t.number, t.state) for t in after.trials] == trials_before and dict(after.user_attrs) == attrs_before
    runs_after = {r.info.run_id: r.info.status for r in client.search_runs([client.get_experiment_by_name(
        "edited").experiment_id])}
    assert runs_after == runs_before and "FINISHED" in runs_after.values()


def _export_study(tmp_path: Path) -> None:
    from dhns_search.search.options import RunOptions
    from dhns_search.search.runner import run_study

    run_study(RunOptions(space=_space(tmp_path), study="ex", n_trials=2, sampler="random", pruner="none",
                         tracking_uri="none"), trainer=fake_train)


def test_export_out_onto_an_existing_file_needs_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _export_study(tmp_path)
    (tmp_path / "best.yaml").write_text("mine\n")
    _refused(runner.invoke(app, ["export", "ex", "--out", "best.yaml"]), "best.yaml exists already")
    assert (tmp_path / "best.yaml").read_text() == "mine\n"
    result = runner.invoke(app, ["export", "ex", "--out", "best.yaml", "--force"])
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "best.yaml").provenance["study"] == "ex"


FAST = ["data.synth.num_entities=60", "data.synth.num_relations=4", "data.synth.num_triples=600",
        "data.synth.visual_dim=8", "data.synth.textual_dim=8", "model.dim=8", "negatives.num=4", "dhns.steps=10",
        "train.epochs=4", "train.eval_every=2", "train.batch_size=128", "train.eval_batch_size=128",
        "train.lr=0.02", "train.progress=false"]


def test_train_out_onto_a_run_folder_needs_force_and_resume_continues_it(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(preset="dhns-distmult", overrides=FAST)
    with pytest.raises(TrainingInterrupted):
        train(cfg, run_dir=run_dir, stop=StopAfter(3))  # an interrupted run: its folder and checkpoint
    checkpoint = (run_dir / "checkpoint.pt").read_bytes()
    args = ["train", "--preset", "dhns-distmult", *[a for o in FAST for a in ("--set", o)]]
    _refused(runner.invoke(app, [*args, "--out", str(run_dir)]), f"--out {run_dir} holds a run already")
    assert (run_dir / "checkpoint.pt").read_bytes() == checkpoint  # untouched

    result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    whole = train(cfg)
    resumed = json.loads((run_dir / "result.json").read_text())
    assert resumed["best_value"] == whole.best_value and resumed["test"] == whole.test

    result = runner.invoke(app, [*args, "--out", str(run_dir), "--force"])
    assert result.exit_code == 0, result.output
    _refused(runner.invoke(app, ["train", "--resume", str(tmp_path)]), "no config.yaml there")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_a_signal_stops_train_resume_checkpointed_with_its_exit_code(tmp_path, monkeypatch, sig):
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) alike: checkpointed, 128 + the signal, the command to go on.
    The command installs its handlers whatever SIGINT's inherited disposition (a background job ignores it)."""
    from dhns_search.training import runs

    run_dir = tmp_path / "run"
    cfg = load_config(preset="dhns-distmult", overrides=FAST)
    with pytest.raises(TrainingInterrupted):
        train(cfg, run_dir=run_dir, stop=StopAfter(3))
    real = runs.train

    def signalled(cfg, **kwargs):
        os.kill(os.getpid(), sig)  # arrives once the command is running
        return real(cfg, **kwargs)

    monkeypatch.setattr(runs, "train", signalled)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job inherits it
    try:
        result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 128 + sig, result.output
    assert f"interrupted; continue with: dhns-search train --resume {run_dir}" in result.output
    assert "Traceback" not in result.output and (run_dir / "checkpoint.pt").is_file()
    monkeypatch.setattr(runs, "train", real)
    result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 0 and (run_dir / "result.json").is_file(), result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--devices", "gpu0"], "--devices: 'gpu0' is not a device (cpu, cuda or cuda:N"),
    (["--devices", "cpu*0"], "the number of workers after * must be a positive integer"),
    (["--devices", "cuda:7"], "--devices cuda:7: this machine has"),
    (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N (got 'tpu')"),
    (["--workers", "0"], "--workers must be at least 1 (got 0)"),
    (["--workers", "2", "--storage", "sqlite:///s.db"], "SQLite takes one writer, and several workers on it"),
], ids=["not-a-device", "zero-slots", "no-such-gpu", "bad-device", "no-workers", "workers-on-sqlite"])
def test_bad_worker_and_device_options_are_refused_before_anything_exists(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path)
    _refused(runner.invoke(app, ["run", "--space", str(space), "--tracking-uri", "none", *args]), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_second_process_on_a_sqlite_study_is_refused_and_a_worker_needs_a_study(tmp_path, monkeypatch):
    from dhns_search.search.locks import file_lock

    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path)
    db = tmp_path / "studies" / "studies.db"
    held = file_lock(db, suffix=".bad.run", timeout=0)
    held.acquire()  # another `run` of the study is going on
    try:
        _refused(runner.invoke(app, ["run", "--space", str(space), "--tracking-uri", "none", "-n", "1"]),
                 "is being run by another process: SQLite takes one writer")
    finally:
        held.release()
    assert not db.exists()
    _refused(runner.invoke(app, ["worker", "--study", "bad", "--storage", f"journal:{tmp_path / 'w.journal'}"]),
             "w.journal: no such journal file")


LONG = "s" * 300


@pytest.mark.parametrize(("args", "message"), [
    (["--study", ""], "--study: empty; give a study name"),
    (["--study", "  "], "--study: empty; give a study name"),
    (["--study", LONG], "--study: the study name has 300 characters; at most 100"),
    (["--max-trials-per-worker", "0"], "--max-trials-per-worker must be at least 1 (got 0)"),
    (["--timeout", "nan"], "--timeout must be a positive number of seconds (got nan)"),
    (["--timeout", "inf"], "--timeout must be a positive number of seconds (got inf)"),
    (["--storage", ""], "--storage: empty; give a storage URL"),
    (["--tracking-uri", ""], "--tracking-uri: empty; give an MLflow tracking URI, or none"),
    (["--objective", ""], "--objective: empty; give one or more objectives"),
    (["--enqueue", ""], "--enqueue: empty; give a config YAML file"),
    (["--work-dir", "bad.yaml"], "--work-dir bad.yaml: a file, not a folder"),
    (["--work-dir", "bad.yaml/work"], "--work-dir bad.yaml/work: bad.yaml is a file, not a folder"),
    (["--work-dir", "w/" + LONG], "--work-dir: the folder name sss"),
    (["--space", "."], ".: a folder, not a space file"),
], ids=["empty-study", "blank-study", "long-study", "zero-per-worker", "nan-timeout", "inf-timeout", "empty-storage",
        "empty-tracking", "empty-objective", "empty-enqueue", "work-dir-file", "work-dir-under-file",
        "work-dir-long", "space-folder"])
def test_empty_null_and_impossible_run_options_are_refused_before_anything_exists(tmp_path, monkeypatch, args,
                                                                                  message):
    monkeypatch.chdir(tmp_path)
    _space(tmp_path)
    base = ["run", "--space", "bad.yaml", "--tracking-uri", "none", "-n", "1", "--no-live"]
    # the option under test comes last, so it replaces a default given above (--tracking-uri)
    _refused(runner.invoke(app, [*base, *args]), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no studies/, no work dir, no mlruns/
    if args[0] in ("--study", "--max-trials-per-worker", "--work-dir"):  # several workers: refused as early
        _refused(runner.invoke(app, [*base, "--workers", "2", *args]), message)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize(("args", "option"), [
    (["run", "--space", ""], "'--space'"),
    (["run", "--work-dir", ""], "'--work-dir'"),
    (["train", "--config", ""], "'--config'"),
    (["train", "--preset", "dhns-distmult", "--out", ""], "'--out'"),
    (["train", "--resume", ""], "'--resume'"),
    (["spaces", "validate", ""], "'files'"),
    (["compare", ""], "'ablation'"),
    (["data", "info", ""], "'path'"),
], ids=["space", "work-dir", "config", "out", "resume", "spaces", "compare", "data"])
def test_an_empty_path_is_refused_not_read_as_the_working_directory(tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for {option}" in result.output and "empty; give a path" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--preset", "dhns-distmult", "--data", ""], "--data: empty; give a dataset folder"),
    (["--preset", "dhns-distmult", "--data", "null"], "null: no such dataset directory"),
    (["--preset", ""], "--preset: empty; give a preset name"),
    (["--preset", "dhns-distmult", "--device", ""], "--device must be auto, cpu, cuda or cuda:N (got '')"),
    (["--preset", "dhns-distmult", "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N (got 'gpu')"),
    (["--preset", "dhns-distmult", "--tracking-uri", ""], "--tracking-uri: empty"),
], ids=["empty-data", "null-data", "empty-preset", "empty-device", "gpu-device", "empty-tracking"])
def test_train_refuses_empty_and_null_options_instead_of_training_on_the_synthetic_graph(tmp_path, monkeypatch,
                                                                                        args, message):
    monkeypatch.chdir(tmp_path)
    _refused(runner.invoke(app, ["train", *args, "--set", "train.epochs=1"]), message)
    assert list(tmp_path.iterdir()) == []  # no runs/


def test_compare_refuses_an_empty_arm_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("base: preset:dhns-distmult\nreference: base\narms: {base: []}\n")
    _refused(runner.invoke(app, ["compare", "a.yaml", "--arms", " , "]), "--arms: empty; give arm names")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]


def test_a_plain_export_onto_an_existing_default_file_needs_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _export_study(tmp_path)
    first = runner.invoke(app, ["export", "ex"])
    assert first.exit_code == 0, first.output
    [written] = (tmp_path / "exports").iterdir()
    written.write_text(written.read_text() + "# my note\n")  # edited by the user
    edited = written.read_text()
    _refused(runner.invoke(app, ["export", "ex"]), f"{Path('exports') / written.name} exists already")
    assert written.read_text() == edited
    _refused(runner.invoke(app, ["export", "ex", "--out", ""]), "--out: empty")
    again = runner.invoke(app, ["export", "ex", "--force"])
    assert again.exit_code == 0, again.output
    assert "# my note" not in written.read_text() and load_config(written).provenance["study"] == "ex"


# ------------------------------------------------------------------------------ silent acceptance
@pytest.mark.parametrize(("override", "message"), [
    ("dhns.modalities=[structural, visiual, textual]", "dhns.modalities: 'visiual' is not a modality; did you mean 'visual'?"),
    ("data.modalities=[Visual]", "data.modalities: 'Visual' is not a modality; did you mean 'visual'?"),
    ("train.lr=.inf", "train.lr: Input should be a finite number (got inf)"),
    ("dhns.weight=.inf", "dhns.weight: Input should be a finite number (got inf)"),
    ("model.epsilon=-.inf", "model.epsilon: Input should be a finite number (got -inf)"),
], ids=["dhns-modality", "data-modality", "inf-lr", "inf-weight", "minus-inf"])
def test_misspelt_modalities_and_infinite_numbers_are_refused_when_the_config_is_read(tmp_path, monkeypatch, override,
                                                                                     message):
    monkeypatch.chdir(tmp_path)
    _refused(runner.invoke(app, ["train", "--preset", "dhns-distmult", "--set", override]), message)
    key, _, value = override.partition("=")
    (tmp_path / "s.yaml").write_text(f"fixed: {{{key}: {value}}}\n"
                                     "params: {model.dim: {type: int, low: 8, high: 16}}\n")
    _refused(runner.invoke(app, ["spaces", "validate", "s.yaml"]), message)
    _refused(runner.invoke(app, ["run", "--space", "s.yaml", "--tracking-uri", "none"]), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_level_that_names_no_table_is_refused_and_a_standard_one_the_dataset_lacks_is_left_out():
    cfg = load_config(preset="dhns-distmult", overrides=[*FAST, "train.epochs=1", "dhns.modalities=structural,depth"])
    with pytest.raises(ConfigError, match="dhns.modalities: 'depth' is neither a standard modality .* nor a feature "
                                          "table of this dataset \\(it has structural, visual\\)"):
        train(cfg.model_copy(update={"data": cfg.data.model_copy(update={"modalities": ["visual"]})}))
    cfg = load_config(preset="dhns-distmult", overrides=[*FAST, "train.epochs=1", "data.modalities=visual"])
    assert train(cfg).config.dhns.modalities == ["structural", "visual"]  # textual: documented, left out


def test_a_feature_file_whose_one_tensor_is_keyed_by_another_modality_is_refused(make_openke):
    import torch

    from dhns_search.data import load_dataset
    from dhns_search.errors import DataError

    root = make_openke()
    (root / "features").mkdir()
    torch.save({"textual": torch.ones(5, 4)}, root / "features" / "visual.pth")
    with pytest.raises(DataError, match="its one tensor is under the key 'textual', but it is read as the 'visual' "
                                        "table; check data.features"):
        load_dataset(root)
    torch.save({"embeddings": torch.ones(5, 4)}, root / "features" / "visual.pth")  # a neutral key: taken
    assert load_dataset(root).features["visual"].values.shape == (5, 4)


def test_a_space_with_no_parameter_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "none.yaml").write_text("fixed: {train.epochs: 2}\nparams: {}\n")
    for args in (["spaces", "validate", "none.yaml"], ["run", "--space", "none.yaml", "--tracking-uri", "none"]):
        _refused(runner.invoke(app, args), "none.yaml: params: no parameter to search")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.yaml"]


def test_train_set_takes_the_comma_separated_list_form_the_docs_give():
    cfg = load_config(preset="dhns-distmult", overrides=["dhns.levels=0,0.5", "dhns.level_weights=1, 1",
                                                         "dhns.margin.factors=0.1,0.9", "dhns.modalities=structural,visual",
                                                         "data.modalities=visual"])
    assert cfg.dhns.levels == [0.0, 0.5] and cfg.dhns.level_weights == [1.0, 1.0]
    assert cfg.dhns.margin.factors == [0.1, 0.9]
    assert cfg.dhns.modalities == ["structural", "visual"] and cfg.data.modalities == ["visual"]
    assert load_config(preset="dhns-distmult", overrides=["dhns.levels=[0, 0.5]", "dhns.level_weights=[1, 1]",
                                                          "dhns.margin.factors=[0.1, 0.9]"]).dhns.levels == [0, 0.5]
    _refused(runner.invoke(app, ["train", "--preset", "dhns-distmult", "--set", "dhns.levels=0,x"]),
             "override dhns.levels: 'x' in '0,x' is not a float")


# ------------------------------------------------------------------------- messages that blamed the wrong thing
@pytest.mark.parametrize(("override", "line"), [
    ("data.features=none", "data.features: should be 'auto' or a mapping (got 'none')"),
    ("data.features={visual: 3}", "data.features.visual: Input should be a valid string (got 3)"),
    ("device=gpu", "device: should be auto, cpu, cuda or cuda:N (got 'gpu')"),
], ids=["union", "union-item", "pattern"])
def test_a_config_error_names_what_the_field_takes_not_pydantics_internals(override, line):
    with pytest.raises(ConfigError) as err:
        load_config(preset="dhns-distmult", overrides=[override])
    assert str(err.value).splitlines()[1:] == [f"  {line}"]
    assert "literal[" not in str(err.value) and "pattern" not in str(err.value)


def test_a_quoted_float_bound_is_a_string_not_an_invalid_integer(tmp_path):
    space = tmp_path / "q.yaml"
    space.write_text('params:\n  train.lr: {type: float, low: "0.001", high: 0.1}\n')
    _refused(runner.invoke(app, ["spaces", "validate", str(space)]),
             "params.train.lr.low: should be a number, not a string: write it without quotes (got '0.001')")
    assert "valid integer" not in runner.invoke(app, ["spaces", "validate", str(space)]).output
