"""Bad YAML files (issue 12): configs and space files both go through ``config.io.read_yaml``.

Each refused file gives one message naming the file (and the line where there is one), exit code 2
through ``dhns-search spaces validate FILE`` and ``dhns-search train --config FILE``, no traceback, the
file unchanged and no run folder written.  A UTF-8 byte-order mark (and CRLF) is accepted.
Unreadable files: the tests run as root, where ``chmod 000`` does not stop a read, so
``Path.read_bytes`` is patched to raise ``PermissionError``.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dhns_search.cli import app
from dhns_search.config import load_config
from dhns_search.config.io import parse_yaml_text, read_yaml, read_yaml_mapping
from dhns_search.errors import ConfigError

runner = CliRunner()
SPACES = Path(__file__).resolve().parents[1] / "spaces"

_DUP = "YAML would silently keep only the last value: remove one"
_EMPTY = "write {} for an empty mapping"

#: (id, file bytes, message after the file path); every one of them is refused by read_yaml itself
READ_CASES: list[tuple[str, bytes, str]] = [
    ("duplicate-top-level", b"description: a\nfixed:\n  model.dim: 8\ndescription: b\n",
     f" line 4: duplicate key description (first on line 1); {_DUP}"),
    ("duplicate-nested", b"fixed:\n  train.epochs: 2\n  model.dim: 8\n  train.epochs: 3\n",
     f" line 4: duplicate key fixed.train.epochs (first on line 2); {_DUP}"),
    ("duplicate-deep", (b"params:\n  lr:\n    path: train.lr\n    type: float\n    low: 0.001\n    high: 0.1\n"
     b"    low: 0.01\n"), f" line 7: duplicate key params.lr.low (first on line 5); {_DUP}"),
    ("duplicate-in-a-list", b"items:\n  - a: 1\n    b: 2\n    a: 3\n",
     f" line 4: duplicate key items[0].a (first on line 2); {_DUP}"),
    ("duplicate-flow", b"fixed: {model.dim: 8, model.dim: 16}\n",
     f" line 1: duplicate key fixed.model.dim (first on line 1); {_DUP}"),
    ("duplicate-same-value", b"seed: 1\nseed: 1\n", f" line 2: duplicate key seed (first on line 1); {_DUP}"),
    ("tab-indentation", b"fixed:\n\tmodel.dim: 8\n", " line 2: a tab in the indentation; YAML indents with spaces only"),
    ("tab-after-spaces", b"fixed:\n  model.dim: 8\n \ttrain.epochs: 2\n",
     " line 3: a tab in the indentation; YAML indents with spaces only"),
    ("tab-separator", b"fixed:\n  train.epochs:\t2\n",
     " line 2, column 16: a tab character; YAML separates keys, values and items with spaces only"),
    ("empty", b"", f": the file is empty; {_EMPTY}"),
    ("blank", b"\n  \n", f": the file is empty; {_EMPTY}"),
    ("comments-only", b"# nothing here\n\n", f": no content (only blank lines, comments or null); {_EMPTY}"),
    ("null", b"---\nnull\n", f": no content (only blank lines, comments or null); {_EMPTY}"),
    ("bom-only", b"\xef\xbb\xbf", f": the file is empty; {_EMPTY}"),
    ("random-bytes", bytes(range(0x80, 0x100)), " line 1: not UTF-8 text (byte 0x80 at offset 0); save the file as UTF-8"),
    ("nul-byte", b"seed: 1\n\x00\n", " line 2: a NUL byte (offset 8): binary data, not a text file"),
    ("gzip", gzip.compress(b"seed: 1\n", mtime=0), ": a gzip-compressed file, not a text file"),
    ("pickle", pickle.dumps({"seed": 1}, protocol=4), ": a Python pickle, not a text file"),
    ("zip", b"PK\x03\x04" + b"\x00" * 26, ": a zip archive (a .zip, .npz or torch .pth/.pt file), not a text file"),
    ("latin-1", "description: caf\u00e9\n".encode("latin-1"),
     " line 1: not UTF-8 text (byte 0xE9 at offset 16); save the file as UTF-8"),
    ("utf-16", "seed: 1\n".encode("utf-16"), ": UTF-16 text (byte-order mark FF FE); save it as UTF-8"),
    ("invalid-yaml", b"fixed: [1, 2\n",
     (" line 2, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow "
     "sequence on line 1)")),
    ("bad-tagged-int", b"seed: !!int x\n",
     " line 1, column 7: not valid YAML: cannot read the value 'x' (invalid literal for int() with base 10: 'x')"),
    ("bad-date", b"description: 2001-13-45\n",
     " line 1, column 14: not valid YAML: cannot read the value '2001-13-45' (month must be in 1..12)"),
    ("huge-int", b"seed: " + b"9" * 5000 + b"\n",
     (" line 1, column 7: not valid YAML: cannot read the value '9999999999999999999999999999999999999...' "
     "(Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; use "
     "sys.set_int_max_str_digits() to increase the limit)")),
    ("nested-too-deeply", b"[" * 5000, ": not valid YAML: nested too deeply"),
    ("python-tag", b"seed: !!python/object:os.system x\n",
     (" line 1, column 7: not valid YAML: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object:os.system'")),
    ("two-documents", b"seed: 1\n---\nseed: 2\n", " line 2: a second YAML document (after ---); a file holds one document"),
]
IDS = [c[0] for c in READ_CASES]


def _write(tmp_path: Path, content: bytes, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _assert_refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip() == f"error: {message}"


@pytest.mark.parametrize(("content", "message"), [c[1:] for c in READ_CASES], ids=IDS)
def test_read_yaml_refuses(tmp_path: Path, content: bytes, message: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert str(err.value) == f"{path}{message}"


@pytest.mark.parametrize(("content", "message"), [c[1:] for c in READ_CASES], ids=IDS)
def test_spaces_validate_refuses(tmp_path: Path, content: bytes, message: str) -> None:
    """A bad space file (a binary one used to give a traceback); the file is left as it was."""
    path = _write(tmp_path, content, "space.yaml")
    result = runner.invoke(app, ["spaces", "validate", str(path)], catch_exceptions=False)
    _assert_refused(result, f"{path}{message}")
    assert result.stdout == ""
    assert path.read_bytes() == content


@pytest.mark.parametrize(("content", "message"), [c[1:] for c in READ_CASES], ids=IDS)
def test_train_config_refuses_before_writing_anything(tmp_path: Path, content: bytes, message: str) -> None:
    path = _write(tmp_path, content, "config.yaml")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(path), "--out", str(out)], catch_exceptions=False)
    _assert_refused(result, f"{path}{message}")
    assert not out.exists() and path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize(("content", "found"), [
    (b"- seed: 1\n- seed: 2\n", "a list of 2 item(s)"),
    (b"42\n", "a number (42)"),
    (b"hello\n", "a string ('hello')"),
    (b"true\n", "a boolean (true)"),
], ids=["list", "number", "string", "boolean"])
def test_a_config_must_be_a_mapping(tmp_path: Path, content: bytes, found: str) -> None:
    path = _write(tmp_path, content, "config.yaml")
    message = (f"{path}: expected a mapping of configuration settings (key: value lines) at the top level, "
               f"found {found}")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == message
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(path), "--out", str(out)], catch_exceptions=False)
    _assert_refused(result, message)
    assert not out.exists()
    # the generic reader returns whatever YAML holds; read_yaml_mapping names what it expected
    assert read_yaml(path) is not None
    with pytest.raises(ConfigError, match=r"expected a mapping \(key: value lines\) at the top level"):
        read_yaml_mapping(path)


def test_a_space_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, b"- a\n- b\n", "space.yaml")
    result = runner.invoke(app, ["spaces", "validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {path}: expected a mapping at the top level")


def test_paths_that_are_not_readable_files(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "link.yaml").symlink_to(tmp_path / "gone.yaml")
    cases = {
        tmp_path / "folder.yaml": "a directory, not a file",
        tmp_path / "link.yaml": f"a broken symbolic link (to {tmp_path}/gone.yaml, which does not exist)",
        tmp_path / "nope.yaml": "no such file",
    }
    for path, reason in cases.items():
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value) == f"{path}: {reason}"
        _assert_refused(runner.invoke(app, ["train", "--config", str(path)], catch_exceptions=False),
                        f"{path}: {reason}")
    locked = _write(tmp_path, b"seed: 3\n", "locked.yaml")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "locked.yaml":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(ConfigError) as err:
        read_yaml(locked)
    assert str(err.value) == f"{locked}: cannot be read: Permission denied"
    _assert_refused(runner.invoke(app, ["spaces", "validate", str(locked)], catch_exceptions=False),
                    f"{locked}: cannot be read: Permission denied")


def test_a_duplicate_key_in_a_space_base_file_names_that_file(tmp_path: Path) -> None:
    base = _write(tmp_path, b"train:\n  epochs: 2\n  epochs: 3\n", "base.yaml")
    space = _write(tmp_path, (SPACES / "smoke.yaml").read_bytes() + b"base: base.yaml\n", "space.yaml")
    result = runner.invoke(app, ["spaces", "validate", str(space)], catch_exceptions=False)
    _assert_refused(result, f"{base} line 3: duplicate key train.epochs (first on line 2); {_DUP}")


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    text = (SPACES / "smoke.yaml").read_text(encoding="utf-8")
    space = _write(tmp_path, b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(), "space.yaml")
    plain = runner.invoke(app, ["spaces", "validate", str(SPACES / "smoke.yaml")], catch_exceptions=False)
    result = runner.invoke(app, ["spaces", "validate", str(space)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    def shown(out: str, path: Path) -> str:
        return " ".join(out.replace(str(path), "X").split())  # rich wraps at the terminal width

    assert shown(result.stdout, space) == shown(plain.stdout, SPACES / "smoke.yaml")
    assert shown(result.stdout, space).startswith("ok X: 4 parameters")
    config = _write(tmp_path, b"\xef\xbb\xbfseed: 7\r\ntrain:\r\n  epochs: 2\r\n", "config.yaml")
    cfg = load_config(config)
    assert cfg.seed == 7 and cfg.train.epochs == 2
    assert parse_yaml_text("\ufeffseed: 1") == {"seed": 1}


def test_an_explicit_empty_mapping_is_accepted(tmp_path: Path) -> None:
    assert read_yaml(_write(tmp_path, b"{}\n")) == {}
    assert load_config(_write(tmp_path, b"{}  # defaults\n", "c.yaml")) == load_config()


def test_keys_that_only_look_alike_are_not_duplicates() -> None:
    data = parse_yaml_text("a: 1\nA: 2\nx:\n  a: 3\n'1': 4\n1: 5\n")
    assert data == {"a": 1, "A": 2, "x": {"a": 3}, "1": 4, 1: 5}
    # merge keys may be overridden, that is what they are for
    merged = parse_yaml_text("base: &b {lr: 0.1, dim: 8}\nrun:\n  <<: *b\n  lr: 0.2\n")
    assert merged["run"] == {"lr": 0.2, "dim": 8}
    # an alias to a recursive node terminates
    assert parse_yaml_text("a: &a [*a]\n")["a"][0] is not None


@pytest.mark.parametrize("text", ["1: a\n0x1: b\n", "~: a\nnull: b\n", "yes: a\ntrue: b\n"],
                         ids=["int", "null", "bool"])
def test_keys_equal_after_parsing_are_duplicates(text: str) -> None:
    with pytest.raises(ConfigError, match=r"f\.yaml line 2: duplicate key .* \(first on line 1\)"):
        parse_yaml_text(text, "f.yaml")


def test_overrides_and_presets_still_parse() -> None:
    assert load_config(overrides=["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match=r"override train\.lr line 1, column 3: not valid YAML"):
        load_config(overrides=["train.lr=[1"])
