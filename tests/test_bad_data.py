"""Bad dataset folders and feature files (issue 12): one clear message, exit code 2, nothing changed.

Every refused case goes through ``dhns-search data check`` and ``data info`` (Typer's CliRunner): the
message is the whole of stderr, stdout is empty, there is no traceback and the dataset folder holds the
same bytes afterwards.  Accepted variants (byte-order mark, CRLF, tabs) load to the same graph.

Unreadable files: the tests run as root, for whom ``chmod 000`` does not stop a read, so
:func:`test_unreadable_files_are_refused` patches ``Path.read_bytes`` / ``Path.open`` to raise
``PermissionError`` for the one file, and real non-regular files (a FIFO, a broken symbolic link, a
directory) are made on disk.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import dhns_search.data.features as features_mod
from dhns_search.cli import app
from dhns_search.cli import data as _data  # noqa: F401  (registers the commands)
from dhns_search.cli import train as _train  # noqa: F401
from dhns_search.config.models import DataConfig, RunConfig
from dhns_search.data import dataset_warnings, load_dataset
from dhns_search.data.features import PublishedTable
from dhns_search.errors import DataError

runner = CliRunner()
N = 5  # entities of the make_openke dataset "tiny"


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root`` with its kind and content (bytes and mtime for files)."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_fifo():
            out[rel] = "fifo"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            with open(path, "rb") as handle:  # not Path.read_bytes / Path.open: some tests patch those
                out[rel] = (handle.read(), path.stat().st_mtime_ns)
    return out


def _assert_refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: {message}"


def _check_refused(root: Path, message: str, command: str = "check") -> None:
    """``data <command> root`` fails with exactly ``message`` and leaves ``root`` as it was."""
    before = _snapshot(root)
    _assert_refused(_invoke("data", command, root), message)
    assert _snapshot(root) == before


# --------------------------------------------------------------------------------------------------
# dataset folders
# --------------------------------------------------------------------------------------------------

TRAIN = "5\n0 1 0\n1 2 1\n2 3 0\n3 4 1\n4 0 0\n"  # the train2id.txt make_openke writes


def _train_with(line: str, at: int = 2) -> bytes:
    """train2id.txt with file line ``at`` replaced by ``line``."""
    lines = TRAIN.splitlines()
    lines[at - 1] = line
    return ("\n".join(lines) + "\n").encode()


#: (id, file, new bytes, message); {root} is the dataset directory
FILE_CASES: list[tuple[str, str, bytes, str]] = [
    # counts
    ("empty-file", "train2id.txt", b"",
     "tiny/train2id.txt: the file is empty (expected the number of triples on line 1)"),
    ("count-not-a-number", "train2id.txt", _train_with("five", 1),
     "tiny/train2id.txt line 1: expected the number of triples, found 'five'"),
    ("count-float", "train2id.txt", _train_with("5.0", 1),
     "tiny/train2id.txt line 1: expected the number of triples, found '5.0'"),
    ("count-negative", "valid2id.txt", b"-1\n0 2 1\n",
     "tiny/valid2id.txt line 1: the number of triples is negative (-1)"),
    ("count-too-high", "train2id.txt", _train_with("6", 1),
     "tiny/train2id.txt line 1: count line says 6 triples but the file has 5"),
    ("count-too-low", "train2id.txt", _train_with("4", 1),
     "tiny/train2id.txt line 1: count line says 4 triples but the file has 5"),
    ("count-huge", "train2id.txt", _train_with("99999999999999999999", 1),
     "tiny/train2id.txt line 1: count line says 99,999,999,999,999,999,999 triples but the file has 5"),
    ("count-thousands-of-digits", "train2id.txt", _train_with("9" * 5000, 1),
     "tiny/train2id.txt line 1: count line says 999999999999999999999999999... triples but the file has 5"),
    ("entity-count-mismatch", "entity2id.txt", b"6\na 0\nb 1\nc 2\nd 3\ne 4\n",
     "tiny/entity2id.txt line 1: count line says 6 entities but the file has 5"),
    ("no-entities", "entity2id.txt", b"0\n", "tiny/entity2id.txt: no entities (the count line says 0)"),
    ("no-relations", "relation2id.txt", b"0\n", "tiny/relation2id.txt: no relations (the count line says 0)"),
    # ids out of range
    ("head-out-of-range", "train2id.txt", _train_with("5 1 0"),
     "tiny/train2id.txt line 2: head id 5 out of range (5 entities)"),
    ("relation-out-of-range", "test2id.txt", b"1\n1 3 2\n",
     "tiny/test2id.txt line 2: relation id 2 out of range (2 relations)"),
    ("negative-tail", "train2id.txt", _train_with("0 -1 0", 4),
     "tiny/train2id.txt line 4: tail id -1 out of range (5 entities)"),
    ("huge-id-int64", "train2id.txt", _train_with("0 9223372036854775807 0"),
     "tiny/train2id.txt line 2: tail id 9223372036854775807 out of range (5 entities)"),
    ("huge-id-overflow", "train2id.txt", _train_with("9223372036854775808 1 0"),
     "tiny/train2id.txt line 2: head id 9223372036854775808 out of range (5 entities)"),
    ("huge-id-long", "train2id.txt", _train_with("0 1 " + "9" * 40),
     "tiny/train2id.txt line 2: relation id 999999999999999999999999999... out of range (2 relations)"),
    ("entity-id-negative", "entity2id.txt", b"5\na -1\nb 1\nc 2\nd 3\ne 4\n",
     "tiny/entity2id.txt line 2: id -1 out of range (ids must be 0..4)"),
    ("entity-id-thousands-of-digits", "entity2id.txt", ("5\na 0\nb " + "1" * 5000 + "\nc 2\nd 3\ne 4\n").encode(),
     "tiny/entity2id.txt line 3: id 111111111111111111111111111... out of range (ids must be 0..4)"),
    ("head-id-thousands-of-digits", "train2id.txt", _train_with("7" * 5000 + " 1 0", 3),
     "tiny/train2id.txt line 3: head id 777777777777777777777777777... out of range (5 entities)"),
    ("entity-id-huge", "entity2id.txt", b"5\na 0\nb 1\nc 2\nd 3\ne 12345678901234567890\n",
     "tiny/entity2id.txt line 6: id 12345678901234567890 out of range (ids must be 0..4)"),
    ("relation-id-twice", "relation2id.txt", b"2\nlikes 0\nknows 0\n",
     "tiny/relation2id.txt line 3: id 0 appears twice"),
    # tokens that are not ASCII decimal integers
    ("token-word", "train2id.txt", _train_with("0 1 x", 3),
     "tiny/train2id.txt line 3: relation id 'x' is not an integer"),
    ("token-float", "train2id.txt", _train_with("0 1.0 0"),
     "tiny/train2id.txt line 2: tail id '1.0' is not an integer"),
    ("token-exponent", "train2id.txt", _train_with("1e0 1 0"),
     "tiny/train2id.txt line 2: head id '1e0' is not an integer"),
    ("token-underscore", "train2id.txt", _train_with("0 1_0 0"),
     "tiny/train2id.txt line 2: tail id '1_0' is not an integer"),
    ("token-arabic-digit", "train2id.txt", _train_with("0 \u0663 0"),
     "tiny/train2id.txt line 2: tail id '\u0663' is not an integer"),
    ("token-double-sign", "train2id.txt", _train_with("0 --1 0"),
     "tiny/train2id.txt line 2: tail id '--1' is not an integer"),
    ("entity-id-word", "entity2id.txt", b"5\na 0\nb one\nc 2\nd 3\ne 4\n",
     "tiny/entity2id.txt line 3: id 'one' is not an integer"),
    ("nbsp-separator", "train2id.txt", _train_with("0\u00a01 0"),
     "tiny/train2id.txt line 2: expected 'head tail relation', found '0\\xa01 0'"),
    ("four-fields", "train2id.txt", _train_with("0 1 0 0"),
     "tiny/train2id.txt line 2: expected 'head tail relation', found '0 1 0 0'"),
    ("two-fields", "valid2id.txt", b"1\n0 2\n", "tiny/valid2id.txt line 2: expected 'head tail relation', found '0 2'"),
    ("blank-line-inside", "train2id.txt", _train_with("", 3),
     "tiny/train2id.txt line 3: an empty line among the triples; remove it (only trailing blank lines are allowed)"),
    # an inserted blank line makes the count look wrong: the blank line is named, not the count
    ("blank-line-inserted", "train2id.txt", b"5\n0 1 0\n\n1 2 1\n2 3 0\n3 4 1\n4 0 0\n",
     "tiny/train2id.txt line 3: an empty line among the triples; remove it (only trailing blank lines are allowed)"),
    ("blank-line-in-ids", "entity2id.txt", b"5\na 0\nb 1\n\nc 2\nd 3\ne 4\n",
     "tiny/entity2id.txt line 4: an empty line among the entities; remove it (only trailing blank lines are allowed)"),
    ("entity-name-only", "entity2id.txt", b"5\na 0\nb\nc 2\nd 3\ne 4\n",
     "tiny/entity2id.txt line 3: expected 'name id', found 'b'"),
    # line ends, encodings, binary content
    ("lone-cr", "train2id.txt", TRAIN.replace("\n", "\r").encode(),
     ("tiny/train2id.txt line 1: a carriage return inside the line (old Mac line ends?); lines must end with "
     "LF or CRLF")),
    ("cr-inside-a-line", "valid2id.txt", b"1\n0 2\r1\n",
     ("tiny/valid2id.txt line 2: a carriage return inside the line (old Mac line ends?); lines must end with "
     "LF or CRLF")),
    ("nul-byte", "train2id.txt", b"5\n0 1 0\n1 2\x001\n2 3 0\n3 4 1\n4 0 0\n",
     "tiny/train2id.txt line 3: a NUL byte (offset 11): binary data, not a text file"),
    ("gzip", "train2id.txt", gzip.compress(TRAIN.encode(), mtime=0),
     "tiny/train2id.txt: a gzip-compressed file, not a text file"),
    ("latin-1", "entity2id.txt", "5\na 0\n\u00e9 1\nc 2\nd 3\ne 4\n".encode("latin-1"),
     "tiny/entity2id.txt line 3: not UTF-8 text (byte 0xE9 at offset 6); save the file as UTF-8"),
    ("utf-16", "relation2id.txt", "2\nlikes 0\nknows 1\n".encode("utf-16"),
     "tiny/relation2id.txt: UTF-16 text (byte-order mark FF FE); save it as UTF-8"),
    # empty splits
    ("empty-train", "train2id.txt", b"0\n",
     ("tiny/train2id.txt: the train split is empty (0 triples); training and evaluation need at least one "
     "triple in each of train, valid and test")),
    ("empty-valid", "valid2id.txt", b"0\n",
     ("tiny/valid2id.txt: the valid split is empty (0 triples); training and evaluation need at least one "
     "triple in each of train, valid and test")),
    ("empty-test", "test2id.txt", b"0\n\n",
     ("tiny/test2id.txt: the test split is empty (0 triples); training and evaluation need at least one "
     "triple in each of train, valid and test")),
]


@pytest.mark.parametrize("command", ["check", "info"])
@pytest.mark.parametrize(("file", "content", "message"), [c[1:] for c in FILE_CASES],
                         ids=[c[0] for c in FILE_CASES])
def test_bad_dataset_file_is_refused(make_openke, command: str, file: str, content: bytes, message: str) -> None:
    root = make_openke()
    (root / file).write_bytes(content)
    _check_refused(root, message, command)
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert str(err.value) == message


def _make_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _make_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "part-0.txt").write_text("1\n0 1 0\n")


def _make_broken_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "gone" / path.name)


def _make_missing(path: Path) -> None:
    path.unlink()


#: (id, file, how to break it, message)
NOT_A_FILE_CASES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("missing", "valid2id.txt", _make_missing, "{root}: missing valid2id.txt (OpenKE layout expected)"),
    ("directory", "train2id.txt", _make_dir, "tiny/train2id.txt: a directory, not a file"),
    ("broken-link", "entity2id.txt", _make_broken_link,
     "tiny/entity2id.txt: a broken symbolic link (to {root}/gone/entity2id.txt, which does not exist)"),
    ("fifo", "test2id.txt", _make_fifo, "tiny/test2id.txt: not a regular file (a FIFO, socket or device)"),
]


@pytest.mark.parametrize("command", ["check", "info"])
@pytest.mark.parametrize(("file", "breaker", "message"), [c[1:] for c in NOT_A_FILE_CASES],
                         ids=[c[0] for c in NOT_A_FILE_CASES])
def test_a_required_file_that_is_not_a_regular_file(make_openke, command, file, breaker, message) -> None:
    root = make_openke()
    breaker(root / file)
    _check_refused(root, message.format(root=root), command)  # a FIFO would block a reader: never opened


def test_unreadable_files_are_refused(make_openke, monkeypatch) -> None:
    """As root ``chmod 000`` does not stop a read: ``Path.read_bytes`` raises ``PermissionError`` here."""
    root = make_openke()
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "test2id.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    _check_refused(root, "tiny/test2id.txt: cannot be read: Permission denied")


def test_an_io_error_while_reading_is_refused(make_openke, monkeypatch) -> None:
    root = make_openke()
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "relation2id.txt":
            raise OSError(5, "Input/output error")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    _check_refused(root, "tiny/relation2id.txt: cannot be read: Input/output error", "info")


# accepted variants: the same graph as the plain files
def _bom(text: str) -> str:
    return "\ufeff" + text


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def _tabs(text: str) -> str:
    return "\n".join(line.replace(" ", "\t") for line in text.split("\n"))


def _messy(text: str) -> str:
    """BOM, mixed CRLF / LF, runs of tabs and spaces, leading zeros, trailing blanks."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        fields = line.split(" ")
        if len(fields) == 3:  # a triple line: pad the ids
            fields = [f"0{f}" if j == 1 else f for j, f in enumerate(fields)]
        out.append(" \t".join(fields) + ("  \r" if i % 2 else ""))
    return "\ufeff" + "\n".join(out) + "\n \n\t\n"


@pytest.mark.parametrize("variant", [_bom, _crlf, _tabs, _messy], ids=["bom", "crlf", "tabs", "messy"])
def test_bom_crlf_and_tabs_are_accepted_in_every_file(make_openke, tmp_path: Path, variant) -> None:
    plain = load_dataset(make_openke(name="plain"))
    root = make_openke(name="tiny")
    for path in root.iterdir():
        path.write_bytes(variant(path.read_text(encoding="utf-8")).encode("utf-8"))
    ds = load_dataset(root)
    assert ds.entity_names == plain.entity_names and ds.relation_names == plain.relation_names
    assert ds.fingerprint() == plain.fingerprint()
    result = _invoke("data", "check", root)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok"


@pytest.mark.benchmarks
def test_a_benchmark_with_bom_crlf_and_tabs_loads_identically(benchmarks_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "MKG-Y"
    root.mkdir()
    for path in (benchmarks_dir / "MKG-Y").iterdir():
        (root / path.name).write_bytes(_bom(_crlf(_tabs(path.read_text(encoding="utf-8")))).encode())
    ds = load_dataset(root)
    assert ds.fingerprint() == "778075d82631d9e36496884474031bb94565d91073cc0ceba9c5aaae17bcb909"
    assert ds.entity_names == load_dataset(benchmarks_dir / "MKG-Y").entity_names


def test_an_empty_train_split_stops_training_before_anything_is_written(make_openke, tmp_path: Path) -> None:
    """It used to pass ``data check`` and end in ``ZeroDivisionError`` in the training loop."""
    root = make_openke()
    (root / "train2id.txt").write_text("0\n")
    out = tmp_path / "run"
    result = _invoke("train", "--preset", "dhns-transe", "--data", root, "--out", out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "ZeroDivisionError" not in result.output
    assert result.stderr.strip().startswith("error: tiny/train2id.txt: the train split is empty (0 triples)")
    assert not out.exists()
    from dhns_search.training import train

    cfg = RunConfig(data=DataConfig(path=str(root)))
    with pytest.raises(DataError, match=r"tiny/train2id.txt: the train split is empty"):
        train(cfg)


# --------------------------------------------------------------------------------------------------
# feature files
# --------------------------------------------------------------------------------------------------


def _table(rows: int = N, width: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _pth(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _with_nan() -> np.ndarray:
    values = _table()
    values[3, 1] = np.nan
    return values


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("visual.npy", _npy(_table()))
    return buffer.getvalue()


_GOOD_NPY, _GOOD_PTH = _npy(_table()), _pth(torch.from_numpy(_table()))

#: (id, file name under features/, bytes, message after "feature file {path}")
FEATURE_CASES: list[tuple[str, str, bytes, str]] = [
    ("rows-short", "visual.npy", _npy(_table(rows=N - 1)), " has 4 rows, expected 5 (one per entity)"),
    ("rows-long", "visual.pth", _pth(torch.from_numpy(_table(rows=N + 1))),
     " has 6 rows, expected 5 (one per entity)"),
    ("one-dimensional", "visual.npy", _npy(np.ones(N, dtype=np.float32)),
     " has shape (5,), expected 2 dimensions (entities, width)"),
    ("three-dimensional", "visual.pth", _pth(torch.ones(N, 2, 2)),
     " has shape (5, 2, 2), expected 2 dimensions (entities, width)"),
    ("no-columns", "visual.npy", _npy(np.ones((N, 0), dtype=np.float32)), " has no columns"),
    ("int-dtype", "visual.npy", _npy(np.arange(N * 2).reshape(N, 2)),
     (": expected floating-point feature vectors, found dtype int64 (integer or boolean values are usually "
     "ids or labels, not features; convert them to float32 if they really are)")),
    ("int-tensor", "visual.pth", _pth(torch.ones(N, 2, dtype=torch.int32)),
     (": expected floating-point feature vectors, found dtype int32 (integer or boolean values are usually "
     "ids or labels, not features; convert them to float32 if they really are)")),
    ("bool-dtype", "visual.npy", _npy(np.ones((N, 2), dtype=bool)),
     (": expected floating-point feature vectors, found dtype bool (integer or boolean values are usually "
     "ids or labels, not features; convert them to float32 if they really are)")),
    ("complex-tensor", "visual.pth", _pth(torch.ones(N, 2, dtype=torch.complex64)),
     ": expected floating-point feature vectors, found dtype complex64"),
    ("string-dtype", "visual.npy", _npy(np.array([["a", "b"]] * N)),
     ": expected floating-point feature vectors, found dtype <U1"),
    ("object-dtype", "visual.npy", _npy(np.array([{"a": 1}] * N, dtype=object), allow_pickle=True),
     ": holds Python objects (dtype object); expected a numeric array"),
    ("nan", "visual.npy", _npy(_with_nan()),
     ": 1 row(s) contain NaN or inf (first: row 3, the entity with that id)"),
    ("sparse", "visual.pth", _pth(torch.eye(N).to_sparse()),
     ": a torch.sparse_coo tensor; save a dense tensor (tensor.to_dense())"),
    ("dict-without-key", "visual.pth", _pth({"textual": torch.ones(N, 2), "image": torch.ones(N, 2)}),
     ": a dict with keys 'textual', 'image'; expected a single tensor or a tensor under the key 'visual'"),
    ("dict-empty", "visual.pth", _pth({}),
     ": an empty dict; expected a tensor, or a dict with a tensor under 'visual'"),
    ("dict-no-tensor", "visual.pth", _pth({"visual": [1.0, 2.0]}),
     ": a dict with keys 'visual' and no tensor in it; expected a tensor under 'visual'"),
    ("list", "visual.pth", _pth([1.0, 2.0]), ": holds a list, expected a tensor or a dict of tensors"),
    ("string", "visual.pt", _pth("features"), ": holds a str, expected a tensor or a dict of tensors"),
    ("empty-npy", "visual.npy", b"", ": the file is empty (0 bytes)"),
    ("empty-pth", "visual.pth", b"", ": the file is empty (0 bytes)"),
    ("text-as-npy", "visual.npy", b"0.1 0.2 0.3\n", ": not a .npy file (text)"),
    ("zip-as-npy", "visual.npy", _zip(), ": not a .npy file (a zip archive (a .zip, .npz or torch .pth/.pt file))"),
    ("npy-as-pth", "visual.pth", _GOOD_NPY, ": not a torch file (a numpy .npy array)"),
    ("text-as-pth", "visual.pth", b"hello\n", ": not a torch file (text)"),
    ("gzip-as-pth", "visual.pt", gzip.compress(_GOOD_PTH, mtime=0), ": not a torch file (a gzip-compressed file)"),
]


@pytest.mark.parametrize("command", ["check", "info"])
@pytest.mark.parametrize(("name", "content", "message"), [c[1:] for c in FEATURE_CASES],
                         ids=[c[0] for c in FEATURE_CASES])
def test_bad_feature_file_is_refused(make_openke, command: str, name: str, content: bytes, message: str) -> None:
    root = make_openke()
    (root / "features").mkdir()
    (root / "features" / name).write_bytes(content)
    _check_refused(root, f"feature file {root}/features/{name}{message}", command)


TRUNCATED_CASES = [
    ("npy-data", "visual.npy", _GOOD_NPY[:-7], "truncated or damaged .npy file ("),
    ("npy-header", "visual.npy", _GOOD_NPY[:40], "truncated or damaged .npy file ("),
    ("pth", "visual.pth", _GOOD_PTH[: len(_GOOD_PTH) // 2],
     ("cannot be read with torch.load(weights_only=True): truncated or damaged, or it holds objects other "
     "than tensors (")),
]


@pytest.mark.parametrize(("name", "content", "start"), [c[1:] for c in TRUNCATED_CASES],
                         ids=[c[0] for c in TRUNCATED_CASES])
def test_truncated_feature_file_is_refused(make_openke, name: str, content: bytes, start: str) -> None:
    """The reason in parentheses is numpy's or torch's own text, so only our part is pinned."""
    root = make_openke()
    (root / "features").mkdir()
    (root / "features" / name).write_bytes(content)
    before = _snapshot(root)
    result = _invoke("data", "check", root)
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: feature file {root}/features/{name}: {start}")
    assert result.stderr.rstrip().endswith(")") and len(result.stderr.strip().splitlines()) == 1
    assert _snapshot(root) == before


@pytest.mark.parametrize(("breaker", "reason"), [
    (_make_dir, "a directory, not a file"),
    (_make_fifo, "not a regular file (a FIFO, socket or device)"),
    (_make_broken_link, "a broken symbolic link (to {root}/features/gone/visual.npy, which does not exist)"),
], ids=["directory", "fifo", "broken-link"])
def test_a_feature_name_held_by_a_non_regular_file(make_openke, breaker, reason: str) -> None:
    root = make_openke()
    (root / "features").mkdir()
    path = root / "features" / "visual.npy"
    path.write_bytes(_GOOD_NPY)
    breaker(path)
    _check_refused(root, f"feature file {path}: {reason.format(root=root)}")


def test_explicit_feature_paths_that_are_not_files(make_openke) -> None:
    root = make_openke()
    (root / "features").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset(root, features={"visual": "features"})
    assert str(err.value) == f"feature file {root}/features: a directory, not a file"
    with pytest.raises(DataError) as err:
        load_dataset(root, features={"visual": "nope.npy"})
    assert str(err.value) == f"feature file {root}/nope.npy: no such file"


def test_an_unreadable_feature_file_is_refused(make_openke, monkeypatch) -> None:
    root = make_openke()
    (root / "features").mkdir()
    (root / "features" / "visual.npy").write_bytes(_GOOD_NPY)
    real = Path.open

    def fake_open(self: Path, *args, **kwargs):
        if self.name == "visual.npy":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", fake_open)
    _check_refused(root, f"feature file {root}/features/visual.npy: cannot be read: Permission denied")


# --------------------------------------------------------------------------------------------------
# warnings: dataset_warnings, and data check / data info print them
# --------------------------------------------------------------------------------------------------


def _warnings_of_check(root: Path) -> list[str]:
    before = _snapshot(root)
    result = _invoke("data", "check", root)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok"
    assert _snapshot(root) == before
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("warning: ") for line in lines), lines
    return [line.removeprefix("warning: ") for line in lines]


def test_all_dataset_warnings_in_order(make_openke) -> None:
    root = make_openke(
        entities=("a", "b", "c", "d", "a"),
        relations=("likes", "knows", "hates"),
        train=((0, 0, 1), (0, 0, 1), (1, 1, 2), (2, 0, 3)),
        valid=((1, 1, 2), (3, 2, 4)),
        test=((0, 0, 3),),
    )
    (root / "features").mkdir()
    np.save(root / "features" / "visual.npy", np.zeros((N, 3), dtype=np.float32))
    np.save(root / "features" / "Textual.npy", _table())
    expected = [
        "train2id.txt: 1 duplicate triple(s) within the split",
        "valid2id.txt: 1 triple(s) also in train2id.txt",
        "valid2id.txt: 1 triple(s) have an entity that never occurs in train2id.txt",
        "valid2id.txt: 1 triple(s) have a relation that never occurs in train2id.txt",
        "entity2id.txt: 1 name(s) appear under more than one id",
        "feature table 'visual': every row is zero (modality missing everywhere)",
        ("feature table 'Textual': not a standard modality name; did you mean 'textual'? (tables and "
        "data.modalities are matched by exact name)"),
    ]
    ds = load_dataset(root)
    assert dataset_warnings(ds) == expected
    assert ds.warnings == expected
    assert _warnings_of_check(root) == expected
    info = _invoke("data", "info", root)
    assert info.exit_code == 0, info.output
    shown = " ".join(info.stdout.split())  # rich wraps long lines
    assert f"{len(expected)} warning(s):" in shown
    assert all(f"- {warning}" in shown for warning in expected), shown


def test_dataset_warnings_follow_the_content_and_keep_loader_notes(make_openke) -> None:
    root = make_openke(train=((0, 0, 1), (0, 0, 1), (1, 1, 2), (2, 0, 3), (3, 1, 4)))
    (root / "features").mkdir()
    np.save(root / "features" / "visual.npy", _table())
    ds = load_dataset(root, placeholder_features={"visual": 4})
    assert dataset_warnings(ds) == [
        "train2id.txt: 1 duplicate triple(s) within the split",
        f"feature table 'visual': placeholder replaces {root}/features/visual.npy",
    ]
    ds.train = torch.unique(ds.train, dim=0)  # the content changed: so do the warnings
    assert dataset_warnings(ds) == [f"feature table 'visual': placeholder replaces {root}/features/visual.npy"]
    assert ds.warnings[0].startswith("train2id.txt: 1 duplicate")  # the load-time list is not rewritten


def test_a_clean_dataset_has_no_warnings(make_openke, synth_dataset) -> None:
    assert dataset_warnings(load_dataset(make_openke())) == []
    assert dataset_warnings(synth_dataset) == []


def _published(monkeypatch, *entries: tuple[str, Path]) -> None:
    """Pretend the files are the published tables of the given names (size + sha256 match)."""
    import hashlib

    tables = tuple(
        PublishedTable(name, N, 3, path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        for name, path in entries
    )
    monkeypatch.setattr(features_mod, "PUBLISHED_TABLES", tables)


def test_wrongly_named_tables_are_warnings(make_openke, tmp_path: Path, monkeypatch) -> None:
    # a published table of another modality under the name visual
    root = make_openke(name="MKG-W")
    torch.save(torch.from_numpy(_table(seed=1)), root / "MKG-W-visual.pth")
    torch.save(torch.from_numpy(_table(seed=2)), root / "MKG-W-textual.pth")
    _published(monkeypatch, ("MKG-W-textual.pth", root / "MKG-W-visual.pth"))
    assert _warnings_of_check(root) == [
        ("feature table 'visual' (MKG-W-visual.pth) is the published MKG-W-textual.pth, a textual table: "
        "check the file names")
    ]
    # a published table of the other 15,000-entity dataset
    _published(monkeypatch, ("MKG-Y-textual.pth", root / "MKG-W-textual.pth"))
    assert _warnings_of_check(root) == [
        "feature table 'textual' (MKG-W-textual.pth) is the published MKG-Y-textual.pth, but the dataset is MKG-W"
    ]
    monkeypatch.setattr(features_mod, "PUBLISHED_TABLES", ())
    # file names that say another modality or another dataset
    ds = load_dataset(root, features={"visual": "MKG-W-textual.pth"})
    assert dataset_warnings(ds) == [
        "feature table 'visual' (MKG-W-textual.pth): the file name says textual; check data.features"
    ]
    (root / "MKG-W-textual.pth").rename(root / "MKG-Y-textual.pth")
    assert _warnings_of_check(root) == [
        "feature table 'textual' (MKG-Y-textual.pth): the file name says MKG-Y, but the dataset is MKG-W"
    ]
    # a dataset name that is not a published one: no dataset check
    other = tmp_path / "mine"
    shutil.copytree(root, other)
    assert _warnings_of_check(other) == []


def test_warnings_never_change_the_data(make_openke) -> None:
    root = make_openke(train=((0, 0, 1), (0, 0, 1), (1, 1, 2), (2, 0, 3), (3, 1, 4)))
    (root / "features").mkdir()
    np.save(root / "features" / "visual.npy", np.zeros((N, 2), dtype=np.float32))
    ds = load_dataset(root)
    assert len(ds.train) == 5 and ds.features["visual"].present == 0


def test_file_content_in_brackets_reaches_the_user(make_openke) -> None:
    root = make_openke()
    (root / "train2id.txt").write_bytes(_train_with("[bold] 1 0"))
    _check_refused(root, "tiny/train2id.txt line 2: head id '[bold]' is not an integer")
