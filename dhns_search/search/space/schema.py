"""The YAML schema of a space file: strict pydantic models, the reserved paths, readable schema errors."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["RESERVED_PATHS", "ParamSpec", "SpaceFile", "schema_errors"]

#: Paths the search layer sets itself; a space may not set them.
RESERVED_PATHS: dict[str, str] = {
    "seed": "each trial's seed is derived from the study seed (dhns-search run --seed)",
    "device": "the device is chosen with dhns-search run --device",
    "train.test": "the test split is never used during a search (export sets train.test true)",
    "train.progress": "the search shows its own live table",
    "provenance": "provenance is written by dhns-search export",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ParamSpec(_Strict):
    """How one parameter is sampled (see :mod:`dhns_search.search.space`)."""

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


def schema_errors(err: ValidationError, source: str) -> list[str]:
    """One line per schema error, each naming ``source`` and the key path (duplicates dropped)."""
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
        elif loc[-1:] in (["low"], ["high"], ["step"]) and e["type"] in ("int_type", "float_type"):
            # one line for the union int | float, not "not a valid integer" for a float bound
            value = e.get("input")
            quoted = ", not a string: write it without quotes" if isinstance(value, str) else ""
            lines.append(f"{source}: {'.'.join(loc)}: should be a number{quoted} (got {value!r})")
        elif e["type"] == "literal_error" and loc[-1:] == ["type"]:
            lines.append(f"{source}: {'.'.join(loc[:-1])}: type must be float, int, categorical or bool "
                         f"(got {e.get('input')!r})")
        else:
            got = "" if isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"
            lines.append(f"{source}: {'.'.join(loc) or '(top level)'}: {e['msg']}{got}")
    return list(dict.fromkeys(lines))
