"""YAML in and out, dotted overrides, presets, and readable validation errors."""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dhns_search.config.models import RunConfig
from dhns_search.errors import ConfigError
from dhns_search.files import atomic_write_text

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2), not as the string PyYAML 1.1 makes."""


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


def parse_yaml_text(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    return parse_yaml_text(path.read_text(encoding="utf-8"), str(path))


def dump_yaml(data: Any) -> str:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100)


def write_yaml(data: Any, path: str | Path) -> Path:
    return atomic_write_text(path, dump_yaml(data))


def format_validation_error(err: ValidationError, source: str) -> str:
    """One message naming every bad key path, e.g. ``train.lr: Input should be a valid number``."""
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


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
    data = copy.deepcopy(data) if data else {}
    for item in overrides or []:
        path, value = parse_override(item)
        set_dotted(data, path, value, f"override {item!r}")
    return data


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
        raw = read_yaml(path)
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = deep_merge(data, raw or {})
        sources.append(str(path))
    data = apply_overrides(data, overrides)
    if overrides:
        sources.append("--set overrides")
    return validate_config(data, " + ".join(sources) or "defaults")
