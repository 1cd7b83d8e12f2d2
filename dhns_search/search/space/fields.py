"""Dotted paths into :class:`RunConfig`: which leaf a path names, its type, and whether a value fits it."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from dhns_search.config.models import RunConfig
from dhns_search.errors import ConfigError

__all__ = ["FieldRef", "resolve_field", "type_name"]


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
        return type_name(self.annotation)


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


def type_name(ann: Any) -> str:
    """A type annotation as a user reads it (``float``, ``list[float]``)."""
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
        raise ConfigError(f"{here} is a {type_name(info.annotation)} field, it has no sub-key {rest[0]!r}")
    raise AssertionError("unreachable")  # pragma: no cover
