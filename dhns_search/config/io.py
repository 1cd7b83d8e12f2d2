"""YAML in and out, dotted overrides, presets, and readable validation errors."""

from __future__ import annotations

import copy
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dhns_search.config.models import RunConfig
from dhns_search.errors import ConfigError
from dhns_search.files import atomic_write_text, read_text_file

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2), not as the string PyYAML 1.1 makes.

    A value its constructor cannot build (``!!int x``, an integer of 5,000 digits, ``2001-13-45``)
    raises a ``ConstructorError`` with the value's position instead of a bare ``ValueError``.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, ArithmeticError) as err:
            shown = node.value if isinstance(node, yaml.ScalarNode) else node.tag
            shown = shown if len(shown) <= 40 else f"{shown[:37]}..."
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {shown!r} ({reason})", node.start_mark
            ) from None


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


class _Dumper(yaml.SafeDumper):
    pass


def _repr_none(dumper: yaml.SafeDumper, _: None) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:null", "null")


_Dumper.add_representer(type(None), _repr_none)


def _yaml_error_message(err: yaml.YAMLError, text: str, source: str) -> str:
    """One line for a PyYAML error: the file, the line and column, and what is wrong."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return f"{source}: not valid YAML: {' '.join(str(err).split())}"
    mark = err.problem_mark
    where = f"{source} line {mark.line + 1}"
    problem = err.problem or "syntax error"
    if "'\\t'" in problem:  # PyYAML: "found character '\t' that cannot start any token"
        lines = text.split("\n")
        line = lines[mark.line] if mark.line < len(lines) else ""
        if "\t" in line[: len(line) - len(line.lstrip(" \t"))]:
            return f"{where}: a tab in the indentation; YAML indents with spaces only"
        return (f"{where}, column {mark.column + 1}: a tab character; YAML separates keys, values and "
                "items with spaces only")
    if err.context == "expected a single document in the stream":
        return f"{where}: a second YAML document (after ---); a file holds one document"
    context = ""
    if err.context:
        context = f" ({err.context}"
        if err.context_mark is not None and err.context_mark.line != mark.line:
            context += f" on line {err.context_mark.line + 1}"
        context += ")"
    return f"{where}, column {mark.column + 1}: not valid YAML: {problem}{context}"


def _check_duplicate_keys(loader: _Loader, root: yaml.Node, source: str) -> None:
    """Refuse a mapping that repeats a key, at any depth (PyYAML would silently keep the last one).

    Keys are compared as the dict built from them would (``1`` and ``0x1``, ``~`` and ``null`` are the
    same key).  ``<<`` merge keys are skipped: an explicit key overriding a merged one is what merging
    is for.  Aliased nodes are visited once, so recursive documents terminate.
    """
    visited: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                full = f"{path}.{key_node.value}" if path else str(key_node.value)
                key = loader.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    raise ConfigError(
                        f"{source} line {line}: duplicate key {full} (first on line {first_line[key]}); "
                        "YAML would silently keep only the last value: remove one"
                    )
                first_line[key] = line
                stack.append((value_node, full))


def parse_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML text (one document); errors raise :class:`ConfigError` naming ``source`` and the line.

    On top of PyYAML's own checks, a key repeated in one mapping (at any depth) is refused: PyYAML
    would keep the last value without a word.  A leading UTF-8 byte-order mark is ignored.
    """
    text = text.removeprefix("\ufeff")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(loader, node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error_message(err, text, source)) from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """Read the one YAML document of a file; every problem raises :class:`ConfigError` naming the file.

    Decisions (tested in ``tests/test_bad_yaml.py``): a UTF-8 byte-order mark is accepted.  Refused, each
    with one message naming the file and, where it makes sense, the line: a missing path, a directory,
    a broken link, a non-regular file, an unreadable file; binary content (compressed, zip, pickle, a
    NUL byte), UTF-16/32 and other non-UTF-8 text; invalid YAML, tabs in the indentation, duplicate keys
    at any depth; a file without content (empty, or only blank lines, comments, ``---`` or ``null``):
    write ``{}`` for an empty mapping.  The value may be any YAML type; :func:`read_yaml_mapping` also
    requires a mapping at the top level.
    """
    path = Path(path)
    text = read_text_file(path, str(path), ConfigError)
    data = parse_yaml_text(text, str(path))
    if data is None:
        what = "the file is empty" if not text.strip() else "no content (only blank lines, comments or null)"
        raise ConfigError(f"{path}: {what}; write {{}} for an empty mapping")
    return data


def read_yaml_mapping(path: str | Path, what: str = "a mapping") -> dict:
    """:func:`read_yaml` for a file whose top level must be a mapping (a configuration, a space file).

    ``what`` names the expected content in the message, e.g. "a mapping of configuration settings".
    """
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {what} (key: value lines) at the top level, found {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    """``value``'s YAML type in words, for messages."""
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    return f"a {type(value).__name__}"


def dump_yaml(data: Any) -> str:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100)


def write_yaml(data: Any, path: str | Path) -> Path:
    return atomic_write_text(path, dump_yaml(data))


#: patterns of string fields, as the user reads them
_PATTERNS = {r"^(auto|cpu|cuda(:[0-9]+)?)$": "auto, cpu, cuda or cuda:N"}
#: a union member in an error's location (``literal['auto']``, ``dict[str,str]``): never a field name
_UNION_TAG = re.compile(r"^(?:[a-z_-]+\[.*\]|int|float|str|bool|none)$")


def _union_member(tag: str) -> str:
    """A union member's tag as words: ``literal['auto']`` -> ``'auto'``, ``dict[str,str]`` -> ``a mapping``."""
    if tag.startswith("literal["):
        return " or ".join(v.strip() for v in tag[len("literal[") : -1].split(","))
    words = {"dict": "a mapping", "list": "a list", "int": "an integer", "float": "a number", "str": "a string",
             "bool": "true or false", "none": "null"}
    return words.get(tag.split("[", 1)[0], tag)


def format_validation_error(err: ValidationError, source: str) -> str:
    """One message naming every bad key path, e.g. ``train.lr: Input should be a valid number``.

    A value that fits no member of a union field (``data.features: none``) is one line saying what the
    field takes, not one line per member with pydantic's tags; a mapping or list given to a field that
    takes one is reported at its bad item (``data.features.visual: Input should be a valid string``)."""
    lines = [f"{source}: invalid configuration"]
    unions: dict[str, dict[str, Any]] = {}
    for e in err.errors():
        parts = [str(p) for p in e["loc"]]
        tag = next((i for i, p in enumerate(parts) if _UNION_TAG.match(p)), None)
        if tag is not None and tag > 0:
            union = unions.setdefault(".".join(parts[:tag]), {"members": [], "inner": [], "input": None})
            if parts[tag] not in union["members"]:
                union["members"].append(parts[tag])
            if len(parts) > tag + 1:  # inside the value: the member fits its kind, an item does not
                union["inner"].append(_error_line(".".join(parts[:tag] + parts[tag + 1 :]), e))
            else:
                union["input"] = e.get("input")
            continue
        lines.append(_error_line(".".join(parts) or "(top level)", e))
    for field, union in unions.items():
        if union["inner"]:
            lines += union["inner"]
            continue
        value = union["input"]
        got = f" (got {value!r})" if not isinstance(value, dict) else ""
        lines.append(f"  {field}: should be {' or '.join(_union_member(m) for m in union['members'])}{got}")
    return "\n".join(lines)


def _error_line(loc: str, e: Any) -> str:
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "string_pattern_mismatch" and e.get("ctx", {}).get("pattern") in _PATTERNS:
        msg = f"should be {_PATTERNS[e['ctx']['pattern']]}"
    if e["type"] not in ("extra_forbidden", "missing") and "input" in e and not isinstance(e["input"], dict):
        msg = f"{msg} (got {e['input']!r})"
    return f"  {loc}: {msg}"


def validate_model(cls: type[M], data: Any, source: str) -> M:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def validate_config(data: Any, source: str = "configuration") -> RunConfig:
    return validate_model(RunConfig, data, source)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=0.001"`` -> ``(["train", "lr"], 0.001)``; the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=0.001")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    return key.split("."), parse_yaml_text(raw, f"override {key}") if raw.strip() else None


def set_dotted(data: dict, path: list[str], value: Any, source: str = "override") -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(path[: i + 1])} is not a section")
        node = child
    node[path[-1]] = value


def get_dotted(data: dict, path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """``data`` with the dotted ``--set`` overrides applied.  A list-valued field also takes the
    comma-separated form of the search spaces (``dhns.levels=0,0.5``, ``dhns.modalities=structural,visual``;
    ``""`` is the empty list), as well as a YAML list (``[0, 0.5]``)."""
    data = copy.deepcopy(data) if data else {}
    for item in overrides or []:
        path, value = parse_override(item)
        item_type = list_item_type(path)
        if item_type is not None and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = decode_list(str(value), item_type, f"override {'.'.join(path)}")
        set_dotted(data, path, value, f"override {item!r}")
    return data


def list_item_type(path: list[str]) -> Any:
    """The item type of the list-valued :class:`RunConfig` field at ``path``; None for any other path."""
    model: Any = RunConfig
    annotation: Any = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        annotation = fields[part].annotation
        model = next((a for a in _union_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None)
    for arg in _union_args(annotation):
        if typing.get_origin(arg) is list:
            return (typing.get_args(arg) or (Any,))[0]
    return None


def _union_args(annotation: Any) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def decode_list(text: str, item_type: Any, where: str = "value") -> list:
    """``"0,0.1"`` -> ``[0.0, 0.1]`` for ``item_type`` float: the comma-separated form of a list value
    (blanks around items ignored, ``""`` the empty list).  A bad item raises :class:`ConfigError`."""
    if text.strip() == "":
        return []
    out: list = []
    for raw in text.split(","):
        item = raw.strip()
        try:
            if item_type is float:
                out.append(float(item))
            elif item_type is int:
                out.append(int(item))
            elif item_type is bool:
                if item.lower() not in ("true", "false"):
                    raise ValueError(item)
                out.append(item.lower() == "true")
            else:
                out.append(item)
        except ValueError:
            name = item_type.__name__ if isinstance(item_type, type) else str(item_type)
            raise ConfigError(f"{where}: {item!r} in {text!r} is not a {name} "
                              "(list values are comma-separated, e.g. \"0,0.1,0.25\")") from None
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    """Recursive merge: mappings merge, everything else in ``extra`` replaces ``base``."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------------------- presets
def preset_names() -> list[str]:
    root = resources.files("dhns_search.config") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_summary(name: str) -> str:
    """The first sentence of a preset's header comment, cut to about 120 characters (what ``train
    --list-presets`` prints beside it)."""
    res = resources.files("dhns_search.config") / "presets" / f"{name}.yaml"
    if not res.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    words: list[str] = []
    for line in res.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    text = " ".join(words)
    end = text.find(". ")
    text = text if end < 0 else text[: end + 1]
    return text if len(text) <= 120 else text[: text.rfind(" ", 0, 120)].rstrip(",;:") + " ..."


def read_preset(name: str) -> dict:
    root = resources.files("dhns_search.config") / "presets"
    res = root / f"{name}.yaml"
    if not res.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    data = parse_yaml_text(res.read_text(encoding="utf-8"), f"preset {name}")
    return data or {}


def load_config(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Build a validated :class:`RunConfig` from a preset and/or a YAML file plus dotted overrides.

    The file is applied on top of the preset; overrides come last.  Errors name the source.
    """
    data: dict = {}
    sources = []
    if preset:
        data = read_preset(preset)
        sources.append(f"preset {preset}")
    if path is not None:
        data = deep_merge(data, read_yaml_mapping(path, "a mapping of configuration settings"))
        sources.append(str(path))
    data = apply_overrides(data, overrides)
    if overrides:
        sources.append("--set overrides")
    return validate_config(data, " + ".join(sources) or "defaults")


def config_differences(a: dict, b: dict, prefix: str = "") -> str:
    """``key: old -> new`` for the leaves where two config dumps differ (the first few)."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            sub = config_differences(x, y, f"{prefix}{key}.")
            out.extend([sub] if sub else [])
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} -> {y!r}")
    return "; ".join(out[:5])
