"""Reading a space file: every check happens here, before any trial starts, and every message names the
file and the key path.

Order of the checks: the schema (unknown keys, types), each parameter (bounds, ``log``, ``step``,
choices, that its path is a :class:`RunConfig` leaf and its values fit the field), the conditions (they
name another parameter of the space and values it can take; no cycles), the ``fixed`` paths, and finally
that base + fixed (+ ``--set`` overrides) is a valid configuration.
"""

from __future__ import annotations

import graphlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dhns_search.config.io import read_preset, read_yaml
from dhns_search.errors import ConfigError
from dhns_search.search.space.encoding import decode_value, encode_list, format_value
from dhns_search.search.space.fields import FieldRef, resolve_field
from dhns_search.search.space.runtime import Param, SearchSpace, apply
from dhns_search.search.space.schema import RESERVED_PATHS, ParamSpec, SpaceFile, schema_errors

__all__ = ["load_space"]

_Report = Callable[[str], None]


def load_space(path: str | Path, *, overrides: list[str] | None = None) -> SearchSpace:
    """Read and validate a space file; raise :class:`ConfigError` naming the file and key path(s)
    (see the module docstring for what is checked)."""
    path = Path(path)
    source = str(path)
    spec = _read_space_file(path, source)
    if not spec.params:  # a study over nothing would train the same configuration N times
        raise ConfigError(f"{source}: params: no parameter to search; give at least one under params: (a "
                          "single configuration is trained with dhns-search train)")
    errors: list[str] = []
    params = _check_params(spec, source, errors)
    _check_conditions(spec, params, source, errors)
    _check_fixed(spec, source, errors)
    if errors:
        raise ConfigError("\n".join(errors))
    order = _sampling_order(params, source)
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


def _read_space_file(path: Path, source: str) -> SpaceFile:
    if path.is_dir():
        raise ConfigError(f"{source}: a folder, not a space file (give a .yaml file in it, e.g. "
                          f"{path / 'default.yaml'})")
    if path.exists() or path.is_symlink():
        read_yaml(path)  # not a regular file, a broken link: its own message
    if not path.is_file():
        raise ConfigError(f"{source}: no such space file (relative to the working directory {Path.cwd()}; "
                          "the shipped spaces are in the repository's spaces/ folder)")
    raw = read_yaml(path)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return SpaceFile.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError("\n".join(schema_errors(err, source))) from None


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


# ------------------------------------------------------------------------------------ parameters
def _check_params(spec: SpaceFile, source: str, errors: list[str]) -> dict[str, Param]:
    """Every parameter checked on its own, then that no config path is set twice (two parameters whose
    conditions exclude each other may set the same path: only one of them is ever sampled)."""
    params: dict[str, Param] = {}
    owners: dict[str, list[str]] = {}  # config path -> parameters setting it
    for name, pspec in spec.params.items():
        where = f"{source}: params.{name}"
        errs, targets = _check_param(name, pspec, where)
        errors += errs
        for t in targets:
            clash = next((o for o in owners.get(t, []) if not _exclusive(spec.params[o], pspec)), None)
            if clash is not None:
                errors.append(f"{where}: sets {t}, which parameter {clash!r} sets too "
                              "(allowed only when their conditions exclude each other)")
            owners.setdefault(t, []).append(name)
            if t in spec.fixed:
                errors.append(f"{where}: {t} is also under fixed:; keep one")
        params[name] = Param(name, pspec, targets)
    return params


def _exclusive(a: ParamSpec, b: ParamSpec) -> bool:
    """True when two parameters' conditions can never hold together: both name one parameter in their
    ``when`` and allow disjoint values of it."""
    def values(v: Any) -> list:
        return v if isinstance(v, list) else [v]

    shared = set(a.when or {}) & set(b.when or {})
    return any(not any(v in values(b.when[k]) for v in values(a.when[k]))  # type: ignore[index]
               for k in shared)


def _check_param(name: str, s: ParamSpec, where: str) -> tuple[list[str], tuple[str, ...]]:
    """Errors of one parameter spec, and the config paths it targets."""
    errors: list[str] = []

    def err(msg: str) -> None:
        errors.append(f"{where}: {msg}")

    if s.type in ("float", "int"):
        _check_numeric_spec(s, err)
    else:
        _check_choice_spec(s, err)
    if errors:
        return errors, ()
    if isinstance(s.choices, dict):
        targets = _check_bundle(name, s.choices, err)
        return _one_choice(s, errors, err), targets
    try:
        ref = resolve_field(name)
    except ConfigError as e:
        err(str(e))
        return errors, ()
    if name in RESERVED_PATHS:
        err(f"cannot be searched: {RESERVED_PATHS[name]}")
        return errors, ()
    _check_fits_field(name, s, ref, err)
    return _one_choice(s, errors, err), (name,)


def _one_choice(s: ParamSpec, errors: list[str], err: _Report) -> list[str]:
    """A categorical parameter with one choice searches nothing (reported when nothing else is wrong)."""
    if not errors and s.type == "categorical" and s.choices and len(s.choices) == 1:
        only = next(iter(s.choices))
        err(f"one choice ({only!r}) searches nothing; put the value under fixed: instead, or add choices")
    return errors


def _check_numeric_spec(s: ParamSpec, err: _Report) -> None:
    """``float`` / ``int``: bounds, ``log`` and ``step``."""
    if s.choices is not None:
        err(f"choices is for categorical parameters, not {s.type}")
    bad = [(k, v) for k, v in (("low", s.low), ("high", s.high), ("step", s.step))
           if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        key, value = bad[0]
        err(f"{key} must be a finite number (got {value}); bounds are inclusive values, e.g. 1.0e+6")
    elif s.low is None or s.high is None:
        err(f"a {s.type} parameter needs low and high")
    else:
        if s.low == s.high:
            err(f"low equals high ({s.low}): nothing to search; put the value under fixed: instead")
        if s.type == "int":
            for key, v in (("low", s.low), ("high", s.high), ("step", s.step)):
                if v is not None and not isinstance(v, int):
                    err(f"{key} of an int parameter must be an integer (got {v!r})")
        if s.low > s.high:
            err(f"low ({s.low}) is greater than high ({s.high})")
        if s.log and s.low <= 0:
            err(f"log: true needs low > 0 (got low {s.low})")
    if s.step is not None and not bad:
        if s.log:
            err("step cannot be combined with log: true")
        elif s.step <= 0:
            err(f"step must be positive (got {s.step})")
        elif s.low is not None and s.high is not None and s.low <= s.high:
            n = (s.high - s.low) / s.step
            if not math.isclose(n, round(n), abs_tol=1e-9):
                err(f"high - low ({s.high - s.low:g}) is not a multiple of step ({s.step})")


def _check_choice_spec(s: ParamSpec, err: _Report) -> None:
    """``categorical`` / ``bool``: no numeric keys; plain, distinct choices."""
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


def _check_bundle(name: str, choices: dict[str, dict], err: _Report) -> tuple[str, ...]:
    """A bundle: a free name, and every ``label -> {path: value}`` a valid, unreserved leaf value.
    Returns the paths the bundle sets."""
    try:
        resolve_field(name)
        err("a bundle (choices given as a mapping) is named freely; this name is a config path: "
            "list plain choices instead, or rename it")
    except ConfigError:
        pass
    targets: list[str] = []
    for label, values in choices.items():
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
    return tuple(targets)


def _check_fits_field(name: str, s: ParamSpec, ref: FieldRef, err: _Report) -> None:
    """Does every value the parameter can sample fit the config field it sets?"""
    if s.type in ("float", "int"):
        if ref.is_list:
            err(f"{name} is a list field ({ref.describe()}): use type: categorical with encoded choices "
                "such as \"0,0.1,0.25\"")
            return
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


# ----------------------------------------------------------------------------- conditions, fixed
def _check_conditions(spec: SpaceFile, params: dict[str, Param], source: str, errors: list[str]) -> None:
    """Each ``when`` names another categorical or bool parameter of the space and values it can take;
    the valid conditions are recorded on the parameters."""
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


def _check_fixed(spec: SpaceFile, source: str, errors: list[str]) -> None:
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


def _sampling_order(params: dict[str, Param], source: str) -> list[str]:
    """File order, except that a parameter comes after those its condition names (a cycle is an error)."""
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
    return order
