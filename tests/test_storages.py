"""Storages for several writers (a journal file, a Redis journal, PostgreSQL) for real, and SQLite files
that cannot be used (locked, missing, foreign) refused with one message."""

from __future__ import annotations

import multiprocessing
import sqlite3
import uuid
from pathlib import Path

import optuna
import pytest
from services import require_postgres, require_redis
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.errors import StudyError
from dhns_search.search.locks import budget_lock
from dhns_search.search.storage import create_or_load, known_studies, make_storage, open_study

runner = CliRunner()


def _one_trial(storage_url: str, name: str) -> None:
    study = create_or_load(name, make_storage(storage_url), ["maximize"])
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)


def _race(storage_url: str, name: str, n: int = 3) -> None:
    """``n`` processes create (or load) the same new study and run a trial each, at the same time."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_one_trial, args=(storage_url, name)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n


def test_a_journal_file_takes_several_processes_creating_one_study_together(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "journal:studies/race.journal"
    _race(url, "race")
    study = optuna.load_study(study_name="race", storage=make_storage(url, create=False))
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert known_studies(None) == [("race", url)]  # status and export find studies/*.journal
    assert open_study("race")[1] == url


def test_postgres_and_redis_take_several_processes_creating_one_study_together():
    for url in (require_postgres(), require_redis()):
        name = f"race-{uuid.uuid4().hex[:8]}"
        try:
            _race(url, name)
            study = optuna.load_study(study_name=name, storage=make_storage(url))
            assert len(study.trials) == 3 and {t.state.name for t in study.trials} == {"COMPLETE"}
        finally:
            optuna.delete_study(study_name=name, storage=make_storage(url))


def test_the_budget_lock_excludes_a_second_holder_on_every_storage(tmp_path):
    """The lock ``--n-trials`` relies on: while one holder has it, another cannot take it."""
    from dhns_search.search.storage import _rdb

    engine = _rdb(require_postgres(), {}).engine
    for url, kw in ((f"journal:{tmp_path / 'b.journal'}", {}), (require_redis(), {}),
                    (require_postgres(), {"engine": engine})):
        name = f"lock-{uuid.uuid4().hex[:8]}"
        ctx = multiprocessing.get_context("spawn")
        with budget_lock(url, name, **kw):
            other = ctx.Process(target=_take_lock, args=(url, name, bool(kw)))
            other.start()
            other.join(3)
            assert other.is_alive(), url  # still waiting for the lock
        other.join(60)
        assert other.exitcode == 0, url


def _take_lock(url: str, name: str, sql: bool) -> None:
    from dhns_search.search.storage import _rdb

    engine = _rdb(url, {}).engine if sql else None
    with budget_lock(url, name, engine=engine):
        pass


def _sqlite_errors(path: Path) -> str:
    with pytest.raises(StudyError) as info:
        make_storage(f"sqlite:///{path}")
    return str(info.value)


def test_unusable_sqlite_files_are_refused_with_one_message(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("hello\n")
    assert "is not a SQLite database" in _sqlite_errors(text)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    assert "not an Optuna storage (its tables: songs)" in _sqlite_errors(foreign)
    (tmp_path / "folder.db").mkdir()
    assert "is a folder" in _sqlite_errors(tmp_path / "folder.db")
    with pytest.raises(StudyError, match="no such database file"):
        make_storage(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    assert not (tmp_path / "missing.db").exists()

    locked = tmp_path / "locked.db"
    make_storage(f"sqlite:///{locked}")  # an Optuna database ...
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # ... that another program holds
    try:
        assert "is locked by another program" in _sqlite_errors(locked)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    bytes_before = foreign.read_bytes()
    result = runner.invoke(app, ["status", "--storage", f"sqlite:///{foreign}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "not an Optuna storage" in result.output and foreign.read_bytes() == bytes_before


def test_a_foreign_journal_file_and_unknown_urls_are_refused(tmp_path):
    bad = tmp_path / "x.journal"
    bad.write_text("not json\n")
    with pytest.raises(StudyError, match="not an Optuna journal file"):
        make_storage(f"journal:{bad}")
    with pytest.raises(StudyError, match="not a supported URL; use sqlite"):
        make_storage("ftp://example.org/studies")
    with pytest.raises(StudyError, match="no such journal file"):
        make_storage(f"journal:{tmp_path / 'none.journal'}", create=False)


def test_status_and_export_of_a_study_in_a_locked_database_say_it_is_locked_not_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_trial("sqlite:///studies/studies.db", "held")
    holder = sqlite3.connect("studies/studies.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a database browser, another tool
    try:
        for args in (["status", "held"], ["export", "held"], ["status"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
            assert "studies/studies.db is locked by another program" in " ".join(result.output.split())
            assert "no study" not in result.output and "no studies found" not in result.output
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    shown = runner.invoke(app, ["status", "held"])
    assert shown.exit_code == 0 and "held" in shown.output


def test_the_retry_callback_says_nothing_about_being_experimental():
    """Optuna marks RetryHeartbeatStaleTrialCallback experimental: every run printed that warning."""
    import warnings

    from dhns_search.search.recovery import retry_callback

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        retry_callback()
        make_storage("sqlite:///:memory:")
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)], caught
