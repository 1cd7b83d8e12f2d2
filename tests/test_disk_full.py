"""A full disk (or any filesystem error) on every write path: ``train --out``, the trial folders and
checkpoints of ``run``, ``export``.  Each is one message naming the file and the cause, exit code 2, no
traceback; what was recorded stays consistent; and the same command (or the one the message prints)
continues once there is space again.

The disk fills up by a patched ``open`` in :mod:`dhns_search.files` (every writer of the package goes
through it): a file whose path contains a chosen folder name fails with ``ENOSPC`` while it is written,
from the N-th such file on, as the kernel would report it (``torch.save`` wraps it in a RuntimeError).
"""

from __future__ import annotations

import builtins
import errno
import json
import os

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from typer.testing import CliRunner

from dhns_search import files
from dhns_search.cli import app
from dhns_search.config import load_config
from dhns_search.search.recovery import budget_used
from dhns_search.search.storage import make_storage
from dhns_search.training import train

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
runner = CliRunner()

FAST = ["data.synth.num_entities=60", "data.synth.num_relations=4", "data.synth.num_triples=600",
        "data.synth.visual_dim=8", "data.synth.textual_dim=8", "model.dim=8", "negatives.num=4", "dhns.steps=10",
        "train.epochs=4", "train.eval_every=1", "train.batch_size=128", "train.eval_batch_size=128",
        "train.lr=0.02", "train.progress=false"]


class FullDisk:
    """Writes of files named ``name`` (or whose path contains ``under``) fail with ENOSPC from the
    ``after``-th one on (counting from 0), until :meth:`free` is called."""

    def __init__(self, monkeypatch, *, name: str | None = None, under: str | None = None, after: int = 0):
        self.name, self.under, self.after, self.seen, self.full = name, under, after, 0, True
        monkeypatch.setattr(files, "open", self._open, raising=False)

    def free(self) -> None:
        self.full = False

    def _open(self, path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
        target = os.fspath(path)
        hit = (self.name is not None and os.path.basename(target).startswith(f".{self.name}.")) or (
            self.under is not None and self.under in target)
        if not (self.full and "w" in mode and hit):
            return handle
        self.seen += 1
        if self.seen <= self.after:
            return handle

        def write(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = write
        return handle


def _one_message(result, *parts: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    text = " ".join(result.output.split())
    for part in parts:
        assert part in text, text
    return text


def test_train_out_on_a_full_disk_keeps_nothing_and_the_same_command_runs_once_there_is_space(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    disk = FullDisk(monkeypatch, name="checkpoint.pt")  # config.yaml fits, the first checkpoint does not
    args = ["train", "--preset", "dhns-distmult", *[a for o in FAST for a in ("--set", o)], "--out", "run"]
    _one_message(runner.invoke(app, args), "cannot write run/checkpoint.pt: No space left on device",
                 "nothing was kept: run the same command again once there is space")
    assert not (tmp_path / "run").exists()  # not a folder with a config.yaml only
    disk.free()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "result.json").read_text())["epochs_run"] == 4


def test_train_out_that_fills_the_disk_later_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    disk = FullDisk(monkeypatch, name="checkpoint.pt", after=2)  # epochs 1 and 2 checkpoint, epoch 3 does not
    args = ["train", "--preset", "dhns-distmult", *[a for o in FAST for a in ("--set", o)], "--out", "run"]
    _one_message(runner.invoke(app, args), "cannot write run/checkpoint.pt: No space left on device",
                 "the run is checkpointed: continue it with dhns-search train --resume run once there is space")
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and not (tmp_path / "run" / "result.json").exists()
    disk.free()
    result = runner.invoke(app, ["train", "--resume", "run"])
    assert result.exit_code == 0, result.output
    whole = train(load_config(preset="dhns-distmult", overrides=FAST))
    assert json.loads((tmp_path / "run" / "result.json").read_text())["best_value"] == whole.best_value


def _space(folder) -> None:
    (folder / "s.yaml").write_text(yaml.safe_dump({
        "fixed": {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in FAST if not o.startswith(("train.lr", "train.progress")))},
        "params": {"train.lr": {"type": "float", "low": 0.005, "high": 0.05, "log": True}}}))


def test_run_on_a_full_work_directory_stops_with_one_message_and_the_same_command_finishes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _space(tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = ["run", "--space", "s.yaml", "--study", "full", "-n", "2", "--sampler", "random", "--no-live",
            "--tracking-uri", tracking, "--work-dir", "work"]
    disk = FullDisk(monkeypatch, under=os.sep + "work" + os.sep, after=3)  # config.yaml, 2 checkpoints, metrics
    text = _one_message(runner.invoke(app, args), "/trial-0000/", "No space left on device, during trial 0",
                        "trial 0 is failed and queued again", "run the same command again once there is space")
    assert "Query-invoked autoflush" not in text
    study = optuna.load_study(study_name="full", storage=make_storage("sqlite:///studies/studies.db"))
    failed, queued = study.trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"].startswith(
        "a file could not be written (cannot write ")
    assert queued.state == TrialState.WAITING and queued.system_attrs["failed_trial"] == 0
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    assert {r.data.tags["dhns.role"]: r.info.status for r in runs}["trial"] == "KILLED"

    disk.free()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="full", storage=make_storage("sqlite:///studies/studies.db"))
    assert budget_used(study) == 2 and [t.state for t in study.trials][1:] == [TrialState.COMPLETE] * 2
    assert study.trials[1].user_attrs["resumed_from_epoch"] == 1  # from the checkpoint that was written


def test_export_on_a_full_disk_is_one_message_and_leaves_the_old_file(tmp_path, monkeypatch):
    from fake_training import fake_run

    from dhns_search.search.options import RunOptions
    from dhns_search.search.runner import run_study

    monkeypatch.chdir(tmp_path)
    _space(tmp_path)
    run_study(RunOptions(space=tmp_path / "s.yaml", study="ex", n_trials=1, sampler="random", pruner="none",
                         tracking_uri="none"),
              trainer=lambda cfg, *, dataset=None, callbacks=(), run_dir=None: fake_run(
                  cfg, callbacks, value=lambda e: 0.1 * e, stats=lambda e: {}, fingerprint="f"))
    (tmp_path / "best.yaml").write_text("mine\n")
    disk = FullDisk(monkeypatch, name="best.yaml")
    _one_message(runner.invoke(app, ["export", "ex", "--out", "best.yaml", "--force"]),
                 "cannot write best.yaml: No space left on device")
    assert (tmp_path / "best.yaml").read_text() == "mine\n" and sorted(os.listdir(tmp_path)) == [
        "best.yaml", "s.yaml", "studies"]  # no temporary file left
    disk.free()
    assert runner.invoke(app, ["export", "ex", "--out", "best.yaml", "--force"]).exit_code == 0
    assert load_config(tmp_path / "best.yaml").provenance["study"] == "ex"


@pytest.mark.parametrize(("err", "words"), [
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "plots/x.png"), "plots/x.png: Read-only file system"),
    (OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "a" * 300), "File name too long"),
], ids=["read-only", "name-too-long"])
def test_any_other_write_of_a_command_fails_with_one_message(monkeypatch, err, words):
    """The safety net of every command: a filesystem error without a message of its own is still one line."""
    from dhns_search.search import reports

    def fail(*args, **kwargs):
        raise err

    monkeypatch.setattr(reports, "list_studies", fail)
    _one_message(runner.invoke(app, ["status"]), words)
