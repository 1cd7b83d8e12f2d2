"""A validated space at run time: its parameters in sampling order, and how sampled values become a config.

:func:`suggest` samples define-by-run on an Optuna trial; :meth:`SearchSpace.resolve` expands bundles and
decodes list choices; :func:`apply` builds the validated :class:`RunConfig`.  The layers of a trial's
configuration are, in this order: base, fixed, ``--set`` overrides, sampled values.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhns_search.config.io import deep_merge, get_dotted, parse_override, set_dotted, validate_config
from dhns_search.config.models import RunConfig
from dhns_search.errors import ConfigError
from dhns_search.search.space.encoding import decode_value, encode_list, format_value, short_values
from dhns_search.search.space.fields import resolve_field
from dhns_search.search.space.schema import RESERVED_PATHS, ParamSpec

__all__ = ["Param", "SearchSpace", "apply", "suggest"]


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
                     source=f"{self.source}: sampled combination {short_values(sampled)}")

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


def _set_all(data: dict, values: dict[str, Any]) -> dict:
    out = copy.deepcopy(data)
    for path, value in values.items():
        set_dotted(out, path.split("."), copy.deepcopy(value), path)
    return out


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


