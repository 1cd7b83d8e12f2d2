"""Search spaces: a strict YAML schema, validation against :class:`RunConfig`, define-by-run sampling.

A space file (``spaces/*.yaml``) has four top-level keys::

    description: what this space is for
    base: preset:dhns-distmult        # or a config YAML path, relative to the space file; omitted = defaults
    fixed:                            # dotted path -> value, applied on top of the base
      train.epochs: 20
    params:                           # dotted path -> how to sample it
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.scorer: {type: categorical, choices: [transe, rotate, distmult, complex]}
      model.gamma: {type: float, low: 2.0, high: 24.0, when: {model.scorer: [transe, rotate]}}

Parameter specs (every key is checked; an unknown one is an error, never silently ignored):

``type``
    ``float`` | ``int`` (need ``low`` and ``high``; optional ``log: true`` or ``step``),
    ``categorical`` (needs a non-empty ``choices``), ``bool`` (samples ``false``/``true``).
``when``
    ``{other_param: value or [values]}``: the parameter is sampled only when every named parameter was
    sampled with one of the values (define-by-run); otherwise the base/fixed value stays.
``description``
    free text, shown by ``dhns-search spaces show``.

**List-valued fields** (``dhns.levels``, ``dhns.modalities`` ...) are sampled as categorical strings,
because Optuna's categorical choices must be plain values.  The encoding is the comma-separated list:
``"0,0.1,0.125,0.25,0.5"`` is ``[0.0, 0.1, 0.125, 0.25, 0.5]`` for a ``list[float]`` field and
``"structural,visual"`` is ``["structural", "visual"]`` for a ``list[str]`` field; blanks around items
are ignored and ``""`` is the empty list.  Items are converted to the field's item type.

**Bundles**: a categorical parameter whose ``choices`` is a *mapping* ``label -> {dotted path: value}``
sets several fields at once, e.g. a hardness-level set with its matching weights and margin factors.
Its key is a free name (not a config path); Optuna sees only the label; the values are plain YAML.

Everything is validated before any trial starts, and every message names the file and the key path.
"""

from __future__ import annotations

import copy
import difflib
import graphlib
import hashlib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from dhns_search.config.io import (
    deep_merge,
    get_dotted,
    parse_override,
    read_preset,
    read_yaml,
    set_dotted,
    validate_config,
)
from dhns_search.config.models import RunConfig
from dhns_search.errors import ConfigError

__all__ = [
    "RESERVED_PATHS",
    "FieldRef",
    "Param",
    "ParamSpec",
    "SearchSpace",
    "SpaceFile",
    "apply",
    "decode_list",
    "decode_value",
    "encode_list",
    "flatten_config",
    "format_value",
    "load_space",
    "resolve_field",
    "suggest",
]

#: Paths the search layer sets itself; a space may not set them.
RESERVED_PATHS: dict[str, str] = {
    "seed": "each trial's seed is derived from the study seed (dhns-search run --seed)",
    "device": "the device is chosen with dhns-search run --device",
    "train.test": "the test split is never used during a search (export sets train.test true)",
    "train.progress": "the search shows its own live table",
    "provenance": "provenance is written by dhns-search export",
}

# ----------------------------------------------------------------------------------------- schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ParamSpec(_Strict):
    """How one parameter is sampled (see the module docstring)."""

    type: Literal["float", "int", "categorical", "bool"]
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | dict[str, dict[str, Any]] | None = None
    when: dict[str, Any] | None = None
    description: str | None = None


class SpaceFile(_Strict):
    """The top level of a space file."""

    description: str | None = None
    base: str | None = None
    fixed: dict[str, Any] = {}
    params: dict[str, ParamSpec] = {}


#: Friendly hints for keys people write out of habit from other tools.
_KEY_HINTS = {
    "scale": "did you mean log: true?",
    "log_scale": "did you mean log: true?",
    "logscale": "did you mean log: true?",
    "distribution": "did you mean type?",
    "kind": "did you mean type?",
    "min": "did you mean low?",
    "max": "did you mean high?",
    "lower": "did you mean low?",
    "upper": "did you mean high?",
    "range": "write low: and high:",
    "values": "did you mean choices?",
    "options": "did you mean choices?",
    "q": "did you mean step?",
    "if": "did you mean when?",
    "condition": "did you mean when?",
    "conditions": "did you mean when?",
    "depends_on": "did you mean when?",
    "default": "a parameter has no default: the base/fixed value is used when its condition is false",
    "help": "did you mean description?",
}


def _hint(key: str, allowed: list[str]) -> str:
    if key in _KEY_HINTS:
        return f" ({_KEY_HINTS[key]})"
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _schema_errors(err: ValidationError, source: str) -> list[str]:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # pydantic adds the union member to the location (``choices.list[any]``); drop it
        loc = [p for p in loc if not p.startswith(("list[", "dict[", "int", "float", "str"))]
        if e["type"] == "extra_forbidden":
            parent, key = loc[:-1], loc[-1]
            allowed = list((ParamSpec if len(parent) == 2 and parent[0] == "params" else SpaceFile).model_fields)
            where = ".".join(parent) or "(top level)"
            lines.append(f"{source}: {where}: unknown key {key!r}{_hint(key, allowed)}")
        elif e["type"] == "literal_error" and loc[-1:] == ["type"]:
            lines.append(f"{source}: {'.'.join(loc[:-1])}: type must be float, int, categorical or bool "
                         f"(got {e.get('input')!r})")
        else:
            got = "" if isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"
            lines.append(f"{source}: {'.'.join(loc) or '(top level)'}: {e['msg']}{got}")
    return list(dict.fromkeys(lines))


# --------------------------------------------------------------------------------- config fields
@dataclass(frozen=True)
class FieldRef:
    """A leaf of the :class:`RunConfig` tree that a dotted path names."""

    path: str
    annotation: Any
    info: FieldInfo | None  # None for a key inside a dict-valued field

    @property
    def is_list(self) -> bool:
        return _list_item_type(self.annotation) is not None

    @property
    def item_type(self) -> type | None:
        return _list_item_type(self.annotation)

    def check(self, value: Any) -> str | None:
        """Validate ``value`` strictly against the field (type and bounds); ``None`` when it fits."""
        probe = _probe_model(self)
        try:
            probe.model_validate({"v": value})
        except ValidationError as err:
            e = err.errors()[0]
            return e["msg"]
        return None

    def describe(self) -> str:
        return _type_name(self.annotation)


_PROBES: dict[str, type[BaseModel]] = {}


def _probe_model(ref: FieldRef) -> type[BaseModel]:
    if ref.path not in _PROBES:
        spec = (ref.annotation, ref.info) if ref.info is not None else (ref.annotation, ...)
        _PROBES[ref.path] = create_model(  # type: ignore[call-overload]
            "Probe", __config__=ConfigDict(strict=True), v=spec
        )
    return _PROBES[ref.path]


def _union_args(ann: Any) -> tuple:
    if typing.get_origin(ann) in (Union, types.UnionType):
        return typing.get_args(ann)
    return (ann,)


def _list_item_type(ann: Any) -> type | None:
    for arg in _union_args(ann):
        if typing.get_origin(arg) is list:
            (item,) = typing.get_args(arg) or (Any,)
            return item
    return None


def _dict_value_type(ann: Any) -> Any | None:
    for arg in _union_args(ann):
        if typing.get_origin(arg) is dict:
            return typing.get_args(arg)[1]
    return None


def _submodel(ann: Any) -> type[BaseModel] | None:
    for arg in _union_args(ann):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _type_name(ann: Any) -> str:
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


def resolve_field(path: str) -> FieldRef:
    """The :class:`RunConfig` leaf named by ``path``, or :class:`ConfigError` saying what is wrong.

    A path ends at a field (``train.lr``, ``dhns.levels``) or at one key inside a mapping-valued field
    (``data.placeholder_features.visual``).  A section (``train``) is not a leaf.
    """
    parts = path.split(".")
    if not all(parts):
        raise ConfigError(f"{path!r} is not a dotted path")
    model: type[BaseModel] = RunConfig
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if part not in model.model_fields:
            prefix = ".".join(parts[:i])
            options = list(model.model_fields)
            close = difflib.get_close_matches(part, options, n=1)
            hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]}?" if close else ""
            raise ConfigError(
                f"{here} is not a field of the run configuration"
                f" ({prefix or 'the top level'} has: {', '.join(options)}){hint}"
            )
        info = model.model_fields[part]
        sub = _submodel(info.annotation)
        rest = parts[i + 1 :]
        if sub is not None:
            if not rest:
                raise ConfigError(f"{here} is a section; name one of its fields ({', '.join(sub.model_fields)})")
            model = sub
            continue
        if not rest:
            return FieldRef(path, info.annotation, info)
        value_type = _dict_value_type(info.annotation)
        if value_type is not None and len(rest) == 1:
            return FieldRef(path, value_type, None)
        raise ConfigError(f"{here} is a {_type_name(info.annotation)} field, it has no sub-key {rest[0]!r}")
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------ list encoding
def format_value(value: Any) -> str:
    """A plain value as text: ``None`` -> ``null``, booleans lower case, floats by ``repr``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return encode_list(value)
    return str(value)


def encode_list(values: list | tuple) -> str:
    """``[0.0, 0.1]`` -> ``"0.0,0.1"``: the categorical encoding of a list value."""
    return ",".join(format_value(v) for v in values)


def decode_list(text: str, item_type: Any, where: str = "value") -> list:
    """``"0,0.1"`` -> ``[0.0, 0.1]`` for ``item_type`` float (the inverse of :func:`encode_list`)."""
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
            raise ConfigError(
                f"{where}: {item!r} in {text!r} is not a {_type_name(item_type)} "
                f"(list choices are comma-separated, e.g. \"0,0.1,0.25\")"
            ) from None
    return out


def decode_value(ref: FieldRef, value: Any, where: str | None = None) -> Any:
    """Decode an encoded list choice for a list-valued field; other values pass through."""
    if ref.is_list and isinstance(value, str):
        return decode_list(value, ref.item_type, where or ref.path)
    return value


def flatten_config(cfg: RunConfig | dict, prefix: str = "") -> dict[str, str]:
    """Every leaf of a config as ``dotted.path -> text`` (lists encoded, mappings flattened further).

    The keys depend only on the config schema (and mapping-valued fields' keys), so every trial of a
    study logs the same keys.
    """
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    out: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, path + "."))
        elif isinstance(value, dict):
            out[path] = "{}"
        else:
            out[path] = format_value(value)
    return out


# ---------------------------------------------------------------------------------- the space
@dataclass
class Param:
    """One validated parameter of a space."""

    name: str
    spec: ParamSpec
    #: paths this parameter sets: one for a plain parameter, several for a bundle
    targets: tuple[str, ...]
    #: ``{other param: allowed values}`` (all must hold)
    when: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def is_bundle(self) -> bool:
        return isinstance(self.spec.choices, dict)

    @property
    def choices(self) -> list[Any] | None:
        """The values Optuna sees: the choices, the bundle labels, or ``[False, True]`` for bool."""
        if self.spec.type == "bool":
            return [False, True]
        if isinstance(self.spec.choices, dict):
            return list(self.spec.choices)
        return self.spec.choices

    def values(self, raw: Any) -> dict[str, Any]:
        """The config values set by the sampled ``raw`` value (bundles expanded, lists decoded)."""
        if isinstance(self.spec.choices, dict):
            return copy.deepcopy(self.spec.choices[raw])
        ref = resolve_field(self.name)
        return {self.name: decode_value(ref, raw, f"params.{self.name}")}

    def active(self, sampled: dict[str, Any]) -> bool:
        """Whether the condition holds for the parameters sampled so far."""
        return all(other in sampled and sampled[other] in allowed for other, allowed in self.when.items())

    def describe_range(self) -> str:
        s = self.spec
        if s.type in ("float", "int"):
            text = f"[{s.low}, {s.high}]"
            if s.log:
                text += " log"
            if s.step is not None:
                text += f" step {s.step}"
            return text
        if s.type == "bool":
            return "false | true"
        # " | " because an encoded list choice contains commas itself
        return " | ".join(format_value(c) for c in self.choices or [])


@dataclass
class SearchSpace:
    """A validated space: the base configuration, the fixed values and the parameters in sampling order."""

    source: str
    path: Path | None
    description: str | None
    base_name: str | None
    base: dict
    fixed: dict[str, Any]
    params: list[Param]
    text: str = ""

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def resolve(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Sampled Optuna values (by parameter name) -> config values by dotted path, decoded."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in sampled:
                out.update(p.values(sampled[p.name]))
        return out

    def override_values(self, overrides: list[str] | None) -> dict[str, Any]:
        """``--set KEY=VALUE`` items as ``{path: value}``, checked: each path is a config leaf, not reserved
        and not searched by a parameter.  Overrides win over ``fixed`` (order: base, fixed, --set, sampled)."""
        targets = {t: p.name for p in self.params for t in p.targets}
        out: dict[str, Any] = {}
        for item in overrides or []:
            parts, value = parse_override(item)
            key = ".".join(parts)
            if key in RESERVED_PATHS:
                raise ConfigError(f"--set {item}: {key} cannot be set here: {RESERVED_PATHS[key]}")
            if key in targets:
                raise ConfigError(
                    f"--set {item}: {key} is searched by parameter {targets[key]!r} of {self.source}; "
                    "remove the parameter from the space (or put the value under fixed:) instead"
                )
            try:
                ref = resolve_field(key)
                out[key] = decode_value(ref, value, f"--set {item}")
            except ConfigError as err:
                raise ConfigError(f"--set {item}: {err}") from None
        return out

    def merged(self, sampled: dict[str, Any], overrides: list[str] | None = None) -> dict:
        """base + fixed + ``--set`` overrides + sampled, as a plain (unvalidated) mapping."""
        values = {**self.fixed, **self.override_values(overrides), **self.resolve(sampled)}
        return _set_all(self.base, {k: decode_value(resolve_field(k), v, k) for k, v in values.items()})

    def config(self, sampled: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
        """The validated configuration of one trial (:class:`ConfigError` for a bad combination)."""
        return apply(self.base, {**self.fixed, **self.override_values(overrides)}, self.resolve(sampled),
                     source=f"{self.source}: sampled combination {_short(sampled)}")

    def check_overrides(self, overrides: list[str] | None) -> RunConfig:
        """Validate ``--set`` overrides and return base + fixed + overrides as a configuration."""
        extra = self.override_values(overrides)
        return apply(self.base, {**self.fixed, **extra}, {},
                     source=f"{self.source}: base + fixed{' + --set' if extra else ''}")

    def enqueue_values(self, data: dict, source: str) -> dict[str, Any]:
        """Optuna parameter values for a warm-start trial.

        ``data`` is either a mapping of parameter names to (Optuna) values, or a run configuration
        (nested, possibly partial), from which each parameter's value is read.  Only the parameters that
        are active under the given values are returned; values outside the space raise ConfigError.
        """
        unmatched: dict[str, str] = {}
        if data and all(k in self.names for k in data):
            raw = dict(data)
        else:
            cfg = validate_config(deep_merge(self.merged({}), data), source)
            dumped = cfg.model_dump(mode="python")
            raw = {}
            for p in self.params:
                if p.is_bundle:
                    label = next(
                        (lab for lab, vals in p.spec.choices.items()  # type: ignore[union-attr]
                         if all(_same(_lookup(dumped, k), v) for k, v in vals.items())),
                        None,
                    )
                    if label is None:
                        unmatched[p.name] = f"no choice of the bundle matches the config's {', '.join(p.targets)}"
                    else:
                        raw[p.name] = label
                    continue
                value = get_dotted(dumped, p.name)
                if isinstance(value, list):  # the choice (as written in the space) that decodes to it
                    ref = resolve_field(p.name)
                    value = next((c for c in p.choices or [] if isinstance(c, str)
                                  and _same(decode_value(ref, c), value)), encode_list(value))
                raw[p.name] = value
        # keep only what is active, in sampling order, and check each value against its parameter
        out: dict[str, Any] = {}
        errors: list[str] = []
        for p in self.params:
            if not p.active(out):
                continue
            if p.name in unmatched:
                errors.append(f"{source}: {p.name}: {unmatched[p.name]}")
            if p.name not in raw:
                continue
            problem = _outside(p, raw[p.name])
            if problem:
                errors.append(f"{source}: {p.name}: {problem}")
            else:
                out[p.name] = raw[p.name]
        if errors:
            raise ConfigError("\n".join(errors))
        return out


_MISSING = object()


def _lookup(data: dict, path: str) -> Any:
    try:
        return get_dotted(data, path)
    except KeyError:
        return _MISSING


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _outside(p: Param, value: Any) -> str | None:
    s = p.spec
    if s.type in ("categorical", "bool"):
        if value not in (p.choices or []):
            return f"{value!r} is not one of the choices ({p.describe_range()})"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number"
    if s.type == "int" and not float(value).is_integer():
        return f"{value!r} is not an integer"
    if not (s.low <= value <= s.high):  # type: ignore[operator]
        return f"{value!r} is outside [{s.low}, {s.high}]"
    return None


def _short(sampled: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={format_value(v)}" for k, v in sampled.items())
    return f"({text})" if len(text) < 300 else f"({text[:297]}...)"


def _set_all(data: dict, values: dict[str, Any]) -> dict:
    out = copy.deepcopy(data)
    for path, value in values.items():
        set_dotted(out, path.split("."), copy.deepcopy(value), path)
    return out


# ----------------------------------------------------------------------------- apply / suggest
def apply(base: dict, fixed: dict[str, Any], values: dict[str, Any], *, source: str = "trial") -> RunConfig:
    """``base`` mapping + ``fixed`` + ``values`` (dotted path -> value) -> a validated :class:`RunConfig`.

    Encoded list choices (``"0,0.1,0.5"``) for list-valued fields are decoded here, so ``values`` may be
    a trial's raw parameters.  A combination that does not validate raises :class:`ConfigError`.
    """
    decoded = {}
    for path, value in {**fixed, **values}.items():
        decoded[path] = decode_value(resolve_field(path), value, path)
    return validate_config(_set_all(base or {}, decoded), source)


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Sample the space on an Optuna ``trial`` (define-by-run).

    Parameters are suggested in the space's deterministic order (conditions after the parameters they
    refer to, file order otherwise); a conditional parameter is suggested only when its condition holds.
    Returns the Optuna values by parameter name (``space.resolve`` turns them into config values).
    """
    sampled: dict[str, Any] = {}
    for p in space.params:
        if not p.active(sampled):
            continue
        s = p.spec
        if s.type == "float":
            sampled[p.name] = trial.suggest_float(p.name, float(s.low), float(s.high), log=s.log,
                                                  step=None if s.step is None else float(s.step))
        elif s.type == "int":
            sampled[p.name] = trial.suggest_int(p.name, int(s.low), int(s.high), step=int(s.step or 1), log=s.log)
        else:
            sampled[p.name] = trial.suggest_categorical(p.name, p.choices)
    return sampled


# --------------------------------------------------------------------------------- validation
def _load_base(base: str | None, space_path: Path | None, source: str) -> dict:
    if base is None:
        return {}
    if base.startswith("preset:"):
        try:
            return read_preset(base[len("preset:") :])
        except ConfigError as err:
            raise ConfigError(f"{source}: base: {err}") from None
    path = Path(base)
    if not path.is_absolute() and space_path is not None:
        path = space_path.parent / path
    if not path.is_file():
        raise ConfigError(f"{source}: base: {path} is not a file (use preset:NAME for a shipped preset)")
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: base: {path} is not a mapping")
    return data


def _check_param(name: str, s: ParamSpec, where: str) -> tuple[list[str], tuple[str, ...]]:
    """Errors of one parameter spec, and the config paths it targets."""
    errors: list[str] = []

    def err(msg: str) -> None:
        errors.append(f"{where}: {msg}")

    numeric = s.type in ("float", "int")
    if numeric:
        if s.choices is not None:
            err(f"choices is for categorical parameters, not {s.type}")
        if s.low is None or s.high is None:
            err(f"a {s.type} parameter needs low and high")
        else:
            if s.type == "int":
                for key, v in (("low", s.low), ("high", s.high), ("step", s.step)):
                    if v is not None and not isinstance(v, int):
                        err(f"{key} of an int parameter must be an integer (got {v!r})")
            if s.low > s.high:
                err(f"low ({s.low}) is greater than high ({s.high})")
            if s.log and s.low <= 0:
                err(f"log: true needs low > 0 (got low {s.low})")
        if s.step is not None:
            if s.log:
                err("step cannot be combined with log: true")
            elif s.step <= 0:
                err(f"step must be positive (got {s.step})")
            elif s.low is not None and s.high is not None and s.low <= s.high:
                n = (s.high - s.low) / s.step
                if not math.isclose(n, round(n), abs_tol=1e-9):
                    err(f"high - low ({s.high - s.low:g}) is not a multiple of step ({s.step})")
    else:
        for key in ("low", "high", "step"):
            if getattr(s, key) is not None:
                err(f"{key} is for float and int parameters, not {s.type}")
        if s.log:
            err(f"log is for float and int parameters, not {s.type}")
        if s.type == "bool" and s.choices is not None:
            err("a bool parameter samples false and true; use type: categorical for other choices")
        if s.type == "categorical":
            if not s.choices:
                err("a categorical parameter needs a non-empty choices list")
            elif isinstance(s.choices, list):
                bad = [c for c in s.choices if not isinstance(c, (str, int, float, bool, type(None)))]
                if bad:
                    err(f"choice {bad[0]!r} is not a plain value: encode a list as a comma-separated string "
                        f"(e.g. {encode_list(bad[0]) if isinstance(bad[0], list) else '...'!r}), "
                        "or use a mapping of labels to values (a bundle)")
                elif len({(type(c), c) for c in s.choices}) != len(s.choices):
                    err("choices contain duplicates")
    if errors:
        return errors, ()

    if isinstance(s.choices, dict):  # a bundle
        try:
            resolve_field(name)
            err("a bundle (choices given as a mapping) is named freely; this name is a config path: "
                "list plain choices instead, or rename it")
        except ConfigError:
            pass
        targets: list[str] = []
        for label, values in s.choices.items():
            if not values:
                err(f"choices.{label}: an empty mapping sets nothing")
            for path, value in values.items():
                try:
                    ref = resolve_field(path)
                except ConfigError as e:
                    err(f"choices.{label}.{path}: {e}")
                    continue
                if path in RESERVED_PATHS:
                    err(f"choices.{label}.{path}: {RESERVED_PATHS[path]}")
                    continue
                problem = ref.check(value)
                if problem:
                    err(f"choices.{label}.{path}: {problem} (got {value!r})")
                if path not in targets:
                    targets.append(path)
        return errors, tuple(targets)

    try:
        ref = resolve_field(name)
    except ConfigError as e:
        err(str(e))
        return errors, ()
    if name in RESERVED_PATHS:
        err(f"cannot be searched: {RESERVED_PATHS[name]}")
        return errors, ()
    # does the sampled value fit the field?
    if numeric:
        if ref.is_list:
            err(f"{name} is a list field ({ref.describe()}): use type: categorical with encoded choices "
                "such as \"0,0.1,0.25\"")
            return errors, (name,)
        for key in ("low", "high"):
            value = getattr(s, key)
            value = float(value) if s.type == "float" else value
            problem = ref.check(value)
            if problem:
                err(f"{key} {value!r} does not fit {name} ({ref.describe()}): {problem}")
    elif s.type == "bool":
        problem = ref.check(True)
        if problem:
            err(f"type bool does not fit {name} ({ref.describe()}): {problem}")
    else:
        for choice in s.choices or []:
            if ref.is_list and isinstance(choice, list):
                err(f"choice {choice!r}: list choices are written as comma-separated strings, "
                    f"e.g. {encode_list(choice)!r}")
                continue
            try:
                value = decode_value(ref, choice, f"choice {choice!r}")
            except ConfigError as e:
                err(str(e))
                continue
            problem = ref.check(value)
            if problem:
                err(f"choice {choice!r} does not fit {name} ({ref.describe()}): {problem}")
    return errors, (name,)


def load_space(path: str | Path, *, overrides: list[str] | None = None) -> SearchSpace:
    """Read and validate a space file; raise :class:`ConfigError` naming the file and key path(s).

    Checks, in order: the schema (unknown keys, types), each parameter (bounds, log, step, choices, that
    its path is a :class:`RunConfig` leaf and its values fit the field), conditions (they name another
    parameter of the space and values it can take; no cycles), the ``fixed`` paths, and finally that
    base + fixed (+ ``overrides``) is a valid configuration.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: no such space file (relative to the working directory {Path.cwd()}; "
                          "the shipped spaces are in the repository's spaces/ folder)")
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        spec = SpaceFile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(_schema_errors(err, source))) from None

    errors: list[str] = []
    params: dict[str, Param] = {}
    owner: dict[str, str] = {}  # config path -> parameter setting it
    for name, pspec in spec.params.items():
        where = f"{source}: params.{name}"
        errs, targets = _check_param(name, pspec, where)
        errors += errs
        for t in targets:
            if t in owner:
                errors.append(f"{where}: sets {t}, which parameter {owner[t]!r} sets too")
            owner.setdefault(t, name)
            if t in spec.fixed:
                errors.append(f"{where}: {t} is also under fixed:; keep one")
        params[name] = Param(name, pspec, targets)

    # conditions
    for name, p in params.items():
        where = f"{source}: params.{name}.when"
        for other, allowed in (p.spec.when or {}).items():
            values = allowed if isinstance(allowed, list) else [allowed]
            if other == name:
                errors.append(f"{where}: a parameter cannot depend on itself")
                continue
            if other not in params:
                note = f" (it is fixed to {format_value(spec.fixed[other])})" if other in spec.fixed else ""
                errors.append(f"{where}.{other}: no parameter {other!r} in this space{note}; "
                              f"parameters: {', '.join(params)}")
                continue
            target = params[other]
            if target.spec.type not in ("categorical", "bool"):
                errors.append(f"{where}.{other}: conditions can only refer to categorical or bool parameters "
                              f"({other} is {target.spec.type})")
                continue
            for v in values:
                if v not in (target.choices or []):
                    errors.append(f"{where}.{other}: {other} cannot take {v!r} "
                                  f"(its choices: {target.describe_range()})")
            p.when[other] = values

    # fixed paths
    for key, value in spec.fixed.items():
        try:
            ref = resolve_field(key)
        except ConfigError as e:
            errors.append(f"{source}: fixed.{key}: {e}")
            continue
        if key in RESERVED_PATHS:
            errors.append(f"{source}: fixed.{key}: {RESERVED_PATHS[key]}")
        elif ref.is_list and isinstance(value, str):
            try:
                decode_value(ref, value, f"{source}: fixed.{key}")
            except ConfigError as e:
                errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors))

    # deterministic order: file order, except that a parameter comes after those its condition names
    position = {n: i for i, n in enumerate(params)}
    sorter = graphlib.TopologicalSorter({n: list(p.when) for n, p in params.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        cycle = " -> ".join(err.args[1])
        raise ConfigError(f"{source}: params: conditions form a cycle ({cycle})") from None
    order: list[str] = []
    ready: list[str] = []
    while sorter.is_active():
        ready = sorted([*ready, *sorter.get_ready()], key=position.__getitem__)
        first = ready.pop(0)  # the earliest parameter in the file whose conditions are resolved
        order.append(first)
        sorter.done(first)

    base = _load_base(spec.base, path, source)
    space = SearchSpace(
        source=source,
        path=path,
        description=spec.description,
        base_name=spec.base,
        base=base,
        fixed=dict(spec.fixed),
        params=[params[n] for n in order],
        text=path.read_text(encoding="utf-8"),
    )
    # base + fixed must be a valid configuration before any trial starts
    try:
        apply(base, space.fixed, {}, source=f"{source}: base + fixed")
    except ConfigError as err:
        raise ConfigError(str(err)) from None
    if overrides:
        space.check_overrides(overrides)
    return space
