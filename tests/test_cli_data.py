"""``dhns-search data info | check | synth`` and ``features text`` through Typer's CliRunner."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dhns_search.cli import app

runner = CliRunner()

EXPECTED = {
    "MKG-Y": ("15,000", "28", "21,310 / 2,665 / 2,663"),
    "DB15K": ("12,842", "279", "79,222 / 9,904 / 9,902"),
    "MKG-W": ("15,000", "169", "34,196 / 4,276 / 4,274"),
}


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.benchmarks
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_on_the_benchmarks(benchmarks_dir: Path, name: str) -> None:
    result = _invoke("data", "info", benchmarks_dir / name)
    assert result.exit_code == 0, result.output
    entities, relations, splits = EXPECTED[name]
    out = result.output
    assert f"dataset {name}" in out
    assert f"│ entities             │ {entities}" in out
    assert f"│ relations            │ {relations} " in out
    assert splits in out
    assert "1-1:" in out and "N-N:" in out
    assert "modality feature tables: none found" in out


def test_info_shows_modalities_and_warnings(synth_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "s"
    shutil.copytree(synth_dir, root)
    (root / "valid2id.txt").write_text(
        (root / "valid2id.txt").read_text() + (root / "train2id.txt").read_text().splitlines()[1] + "\n"
    )
    lines = (root / "valid2id.txt").read_text().splitlines()
    lines[0] = str(len(lines) - 1)
    (root / "valid2id.txt").write_text("\n".join(lines) + "\n")
    result = _invoke("data", "info", root)
    assert result.exit_code == 0, result.output
    assert "510 / 600 (85.0%)" in result.output
    assert "features/visual.npy" in result.output and "features/textual.npy" in result.output
    assert "1 warning(s):" in result.output
    assert "valid2id.txt: 1 triple(s) also in train2id.txt" in result.output


def test_check_ok(synth_dir: Path) -> None:
    result = _invoke("data", "check", synth_dir)
    assert result.exit_code == 0
    assert result.stdout.strip() == "ok"


@pytest.fixture
def mkgy_copy(benchmarks_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "MKG-Y"
    shutil.copytree(benchmarks_dir / "MKG-Y", root)
    for path in root.iterdir():
        path.chmod(0o644)
    root.chmod(0o755)
    return root


def _edit_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _assert_one_clear_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: {message}"


@pytest.mark.benchmarks
@pytest.mark.parametrize("command", ["info", "check"])
def test_bad_count_line(mkgy_copy: Path, command: str) -> None:
    _edit_line(mkgy_copy / "train2id.txt", 1, "21311")
    result = _invoke("data", command, mkgy_copy)
    _assert_one_clear_error(
        result, "MKG-Y/train2id.txt line 1: count line says 21,311 triples but the file has 21,310"
    )


@pytest.mark.benchmarks
def test_out_of_range_relation_id(mkgy_copy: Path) -> None:
    path = mkgy_copy / "train2id.txt"
    head, tail, _ = path.read_text().splitlines()[16].split()
    _edit_line(path, 17, f"{head} {tail} 31")
    _assert_one_clear_error(
        _invoke("data", "check", mkgy_copy),
        "MKG-Y/train2id.txt line 17: relation id 31 out of range (28 relations)",
    )


@pytest.mark.benchmarks
def test_feature_file_one_row_short(mkgy_copy: Path) -> None:
    (mkgy_copy / "features").mkdir()
    np.save(mkgy_copy / "features" / "visual.npy", np.ones((14999, 4), dtype=np.float32))
    result = _invoke("data", "check", mkgy_copy)
    _assert_one_clear_error(
        result,
        f"feature file {mkgy_copy}/features/visual.npy has 14,999 rows, expected 15,000 (one per entity)",
    )


def test_missing_directory(tmp_path: Path) -> None:
    result = _invoke("data", "info", tmp_path / "nope")
    _assert_one_clear_error(result, f"{tmp_path}/nope: no such dataset directory")


def test_synth_command(tmp_path: Path, synth_dir: Path) -> None:
    out = tmp_path / "g"
    result = _invoke("data", "synth", "--out", out, "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "600" in result.output and "wrote the synthetic graph" in result.output
    assert (out / "train2id.txt").read_bytes() == (synth_dir / "train2id.txt").read_bytes()
    # a non-empty directory needs --force
    result = _invoke("data", "synth", "--out", out, "--seed", "1")
    _assert_one_clear_error(result, f"{out}: directory is not empty; pass --force to write into it")
    small = _invoke("data", "synth", "--out", out, "--seed", "1", "--entities", "50", "--triples", "300",
                    "--relations", "4", "--force")
    assert small.exit_code == 0, small.output
    assert (out / "entity2id.txt").read_text().splitlines()[0] == "50"


def test_synth_rejects_bad_options(tmp_path: Path) -> None:
    result = _invoke("data", "synth", "--out", tmp_path / "g", "--missing-fraction", "1.5")
    assert result.exit_code == 2
    assert "missing_fraction" in result.stderr and "Traceback" not in result.output
    result = _invoke("data", "synth", "--out", tmp_path / "g", "--entities", "10", "--triples", "5000",
                     "--relations", "1")
    assert result.exit_code == 2
    assert "data.synth.num_triples" in result.stderr


@pytest.mark.benchmarks
def test_features_text_on_wikidata_ids_asks_for_names(benchmarks_dir: Path, tmp_path: Path) -> None:
    result = _invoke("features", "text", benchmarks_dir / "MKG-W", "--out", tmp_path / "t.npy")
    _assert_one_clear_error(result, "MKG-W has Wikidata ids, not names; pass --names FILE (id<TAB>name)")


def test_features_text_with_a_names_file(make_openke, tmp_path: Path) -> None:
    root = make_openke(entities=("Q1", "Q2", "Q3", "Q4", "Q5"))
    names = tmp_path / "names.tsv"
    names.write_text("Q1\tuniverse\nQ2\tEarth\nQ3\tlife\nQ4\tdeath\n", encoding="utf-8")
    out = tmp_path / "text.npy"
    result = _invoke("features", "text", root, "--names", names, "--out", out, "--quiet", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    assert "1 entities have no name" in result.stderr
    values = np.load(out)
    assert values.shape == (5, 384) and values[:4].any(axis=1).all() and not values[4].any()
